"""A fault-injecting HTTP proxy on loopback, in front of a real OpenAI-compatible server.

Each request is either forwarded to the upstream server or answered with a fault, chosen
by a seeded generator (or by a fixed ``script`` for the first requests):

* ``"429"`` — rate limited, with ``Retry-After: 1``;
* ``"500"`` — an internal server error;
* ``"401"`` — bad credentials (a persistent fault; not in the default mix);
* ``"drop"`` — the connection is reset without a response;
* ``"timeout"`` — no response for ``hang_s`` seconds, then the connection is closed
  (the client's own timeout must be shorter to see a timeout).

Used by ``tests/test_http.py`` and ``experiments/bench_faults.py``::

    with FaultProxy("http://127.0.0.1:8080", rates={"429": .03, "500": .03, "drop": .03, "timeout": .01}) as proxy:
        lm = get_lm(f"openai/qwen2.5-coder-0.5b@{proxy.url}/v1")
        ...
    proxy.counts  # Counter({'forwarded': 950, '429': 31, ...})
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import struct
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FAULTS = ("429", "500", "401", "drop", "timeout")
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class FaultProxy:
    """Forward HTTP requests to ``upstream``, injecting faults at ``rates`` (see the module docstring)."""

    def __init__(self, upstream: str, *, rates: Mapping[str, float] | None = None, script: Sequence[str] = (),
                 seed: int = 0, hang_s: float = 20.0, host: str = "127.0.0.1", port: int = 0) -> None:
        unknown = set(rates or {}) - set(FAULTS) | (set(script) - set(FAULTS) - {"ok"})
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; use {FAULTS}")
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.rates = dict(rates or {})
        self.script = list(script)
        self.hang_s = hang_s
        self.counts: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def _choose(self) -> str:
        with self._lock:
            n = sum(self.counts.values())
            if n < len(self.script):
                kind = self.script[n]
            else:
                draw, kind, acc = self._rng.random(), "ok", 0.0
                for fault, rate in sorted(self.rates.items()):
                    acc += rate
                    if draw < acc:
                        kind = fault
                        break
            self.counts["forwarded" if kind == "ok" else kind] += 1
            return kind

    def injected(self) -> int:
        """Faults injected so far."""
        return sum(v for k, v in self.counts.items() if k != "forwarded")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _reset(self) -> None:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            def _error(self, status: int, kind: str, message: str) -> None:
                body = json.dumps({"error": {"message": message, "type": kind, "code": kind}}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if status == 429:
                    self.send_header("Retry-After", "1")
                self.end_headers()
                self.wfile.write(body)

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                kind = proxy._choose()
                if kind == "429":
                    return self._error(429, "rate_limit_exceeded", "injected: rate limited")
                if kind == "500":
                    return self._error(500, "server_error", "injected: internal server error")
                if kind == "401":
                    return self._error(401, "invalid_api_key", "injected: invalid api key")
                if kind == "drop":
                    return self._reset()
                if kind == "timeout":
                    proxy._stop.wait(proxy.hang_s)
                    return self._reset()
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=600)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in _HOP:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _serve

        return Handler

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="fault-proxy")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
