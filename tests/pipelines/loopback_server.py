"""The HTTP side shared by the loopback fakes of JSON REST APIs (fake_kfp_server.py,
fake_vertex_server.py): a subclass answers `handle(method, path, query, body)`; this class
serves it on a free 127.0.0.1 port and records every request."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class LoopbackJsonServer:
    """Serves `handle` over HTTP on loopback; JSON bodies in and out.

    Attributes:
      requests: every request in order: {'method', 'path', 'query', 'body'}, with `path` and
        `query` as `split_target` makes them.
      methods: the HTTP methods served (others get the standard 501).
    """

    methods: tuple[str, ...] = ("GET", "POST", "DELETE")

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        """`http://127.0.0.1:PORT` of the running server."""
        assert self._server, "start() the server first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def split_target(self, target: str) -> tuple[str, Any]:
        """The request target as `handle` takes it: (path, query); here the query is the raw
        string after '?'."""
        path, _, query = target.partition("?")
        return path, query

    def handle(self, method: str, path: str, query: Any, body: Any) -> tuple[int, dict]:
        """Answers one request with (HTTP status, JSON payload)."""
        raise NotImplementedError

    def start(self) -> str:
        """Starts serving on a free loopback port; returns `endpoint`."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                path, query = fake.split_target(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                fake.requests.append(
                    {"method": self.command, "path": path, "query": query, "body": body}
                )
                status, payload = fake.handle(self.command, path, query, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        for method in self.methods:
            setattr(Handler, f"do_{method}", Handler._serve)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self.endpoint

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
