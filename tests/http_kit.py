"""What the HTTP tests share: the test secrets and settings, a recording WhatsApp sender,
an in-process client, and a real `nlu serve` process on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from nlu.server import ENV_AGENT_TOKEN, ENV_APP_SECRET, ENV_VERIFY_TOKEN, ServerSettings, create_app
from nlu.service import Service

with warnings.catch_warnings():  # starlette's TestClient warns that it prefers httpx2
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

VERIFY = "verifica-esto-123"
SECRET = "app-secret-0123456789abcdef"
TOKEN = "agente-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json"}
BODY_LIMIT = 64 * 1024
WEBHOOK_LIMIT = 16 * 1024
SETTINGS = ServerSettings(
    verify_token=VERIFY, app_secret=SECRET, agent_token=TOKEN, max_body_bytes=BODY_LIMIT, max_webhook_bytes=WEBHOOK_LIMIT
)


class RecordingSender:
    """A WhatsApp sender that keeps what it was given (and can fail like the Graph API)."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[dict[str, Any]] = []
        self.fail = fail

    def send(self, body: dict[str, Any]) -> None:
        self.sent.append(body)
        if self.fail:
            raise RuntimeError("graph api down")


def in_process_client(service: Service, sender: RecordingSender, settings: ServerSettings = SETTINGS) -> TestClient:
    """The ASGI app in-process; server errors come back as responses, as a caller sees them."""
    return TestClient(create_app(service, settings, sender=sender), raise_server_exceptions=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(model_dir: Path, db: str, workers: int = 1, startup_seconds: float = 90) -> Iterator[str]:
    """A real `nlu serve` process on a free port with the test secrets; yields its base URL
    once /healthz answers, and stops it with SIGTERM (then SIGKILL) afterwards."""
    port = free_port()
    env = {**os.environ, ENV_VERIFY_TOKEN: VERIFY, ENV_APP_SECRET: SECRET, ENV_AGENT_TOKEN: TOKEN, "NLU_DB": db}
    command = [
        sys.executable, "-m", "nlu", "serve", str(model_dir), "--port", str(port), "--workers", str(workers),
        "--no-access-log", "--log-level", "warning",
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_seconds
        while True:
            assert process.poll() is None, process.communicate()[1].decode()
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.1)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    # Reached only when the body succeeded: uvicorn shuts down gracefully on SIGTERM, then
    # re-raises the signal to exit.
    assert process.returncode in (0, -signal.SIGTERM), f"server exited with {process.returncode} on SIGTERM"
