"""Service metrics in the Prometheus text exposition format (version 0.0.4).

A few counters, one latency histogram and gauges computed at scrape time are all the
service needs, so they are written here (about a hundred lines) rather than pulling in
``prometheus-client``. Counts are per process: with ``--workers N`` each worker keeps its
own and a scrape reaches whichever worker accepts it (run one worker per container, or
scrape each, when exact totals matter).

The ``route`` label is the route *template* (``/v1/queue/{ticket_id}/resolve``), never
the raw path, so a caller cannot blow up the number of series; unmatched paths share
``route="unmatched"``.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping

# Seconds. Dense below 50 ms, where a scoring service lives, with a tail for slow disks.
LATENCY_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

Labels = tuple[tuple[str, str], ...]


class Metrics:
    """Thread-safe counters and a histogram; :meth:`render` writes the exposition text."""

    def __init__(self, buckets: Iterable[float] = LATENCY_BUCKETS) -> None:
        self._lock = threading.Lock()
        self.buckets = tuple(sorted(buckets))
        self._counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        # route -> [count per bucket (non-cumulative, +Inf last)], sum, count
        self._hist: dict[str, list[float]] = {}
        self._help: dict[str, str] = {
            "nlu_http_requests_total": "HTTP requests by route template, method and status code.",
            "nlu_actions_total": "Outcomes of handled messages by action (answer, clarify, escalate, handover).",
            "nlu_duplicates_total": "Messages answered from the stored outcome because their id was seen before.",
            "nlu_whatsapp_messages_total": "Customer messages received on the webhook by type.",
            "nlu_whatsapp_ignored_total": "Webhook items acknowledged but not handled, by reason.",
            "nlu_whatsapp_statuses_total": "Delivery status updates received on the webhook, by status (failed: a reply not delivered).",
            "nlu_whatsapp_signature_failures_total": "Webhook posts refused for a missing or wrong signature.",
            "nlu_whatsapp_sent_total": "Reply bodies handed to the sender.",
            "nlu_whatsapp_send_failures_total": "Reply bodies the sender failed to deliver.",
            "nlu_scored_texts_total": "Texts scored through /v1/score.",
        }

    # -- recording ------------------------------------------------------------------------

    def inc(self, name: str, labels: Mapping[str, str] | None = None, value: float = 1.0) -> None:
        key = tuple(sorted((labels or {}).items()))
        with self._lock:
            self._counters[name][key] += value

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.inc("nlu_http_requests_total", {"route": route, "method": method, "status": str(status)})
        index = bisect.bisect_left(self.buckets, seconds)
        with self._lock:
            hist = self._hist.setdefault(route, [0.0] * (len(self.buckets) + 3))
            hist[index] += 1
            hist[-2] += seconds
            hist[-1] += 1

    def value(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        """One counter's current value (0 when never incremented); for tests and health."""
        with self._lock:
            return self._counters.get(name, {}).get(tuple(sorted((labels or {}).items())), 0.0)

    # -- exposition -----------------------------------------------------------------------

    def render(self, gauges: Mapping[str, tuple[str, Callable[[], float | None]]] = {}) -> str:  # noqa: B006 - read only
        """The exposition text. ``gauges`` maps a name to (help, read function); a read
        that returns None (e.g. the queue is disabled) leaves the gauge out."""
        lines: list[str] = []
        with self._lock:
            counters = {name: dict(series) for name, series in self._counters.items()}
            hists = {route: list(h) for route, h in self._hist.items()}
        for name in sorted(set(self._help) | set(counters)):
            lines.append(f"# HELP {name} {self._help.get(name, name)}")
            lines.append(f"# TYPE {name} counter")
            for labels, value in sorted(counters.get(name, {}).items()):
                lines.append(f"{name}{_labels(labels)} {_number(value)}")
        name = "nlu_http_request_duration_seconds"
        lines.append(f"# HELP {name} Time from request start to the end of the response, by route template.")
        lines.append(f"# TYPE {name} histogram")
        for route, hist in sorted(hists.items()):
            cumulative = 0.0
            for bound, count in zip((*self.buckets, float("inf")), hist[: len(self.buckets) + 1], strict=True):
                cumulative += count
                le = "+Inf" if bound == float("inf") else _number(bound)
                lines.append(f"{name}_bucket{_labels((('le', le), ('route', route)))} {_number(cumulative)}")
            lines.append(f"{name}_sum{_labels((('route', route),))} {hist[-2]!r}")
            lines.append(f"{name}_count{_labels((('route', route),))} {_number(hist[-1])}")
        for gauge, (help_text, read) in sorted(gauges.items()):
            reading = read()
            if reading is None:
                continue
            lines.append(f"# HELP {gauge} {help_text}")
            lines.append(f"# TYPE {gauge} gauge")
            lines.append(f"{gauge} {_number(reading)}")
        return "\n".join(lines) + "\n"


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
