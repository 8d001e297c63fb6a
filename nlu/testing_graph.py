"""A local stand-in for the WhatsApp Cloud API's messages endpoint, for tests and the soak
(not used by the service): a real HTTP server on 127.0.0.1 that records each POST and
answers as its subclass decides (``answer``)."""

from __future__ import annotations

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["GraphStandIn"]


class GraphStandIn:
    """Records ``{"path", "auth", "body"}`` per POST in ``requests``; ``url`` is the base
    to give ``CloudApiSender`` (``.../v21.0``). Subclasses override :meth:`answer`."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        graph = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                request = {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
                with graph.lock:
                    graph.requests.append(request)
                status, headers, answer = graph.answer(request)
                raw = json.dumps(answer).encode()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the caller gave up waiting
                    self.send_response(status)
                    for name, value in {"Content-Type": "application/json", **headers}.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True  # a kept-alive connection must not hold up close()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v21.0"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def answer(self, request: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        """(status, headers, JSON body) for one request; by default Meta's "sent"."""
        return 200, {}, {"messaging_product": "whatsapp", "messages": [{"id": "wamid.out"}]}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
