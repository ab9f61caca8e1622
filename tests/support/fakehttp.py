"""The scripted JSON servers the tests put on loopback (a fake Ollama, a fake OpenAI server): one base for
sending JSON, reading request bodies and running a threaded server, so each fake only says what it answers."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class JsonHandler(BaseHTTPRequestHandler):
    """Request handler with `json_body()` and `send_json(status, obj)`; quiet (no access log on stderr)."""

    def json_body(self) -> dict:
        return json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")

    def send_json(self, status: int, obj: dict | str) -> None:
        """`obj` as JSON (a str is sent as it is: tests send broken JSON on purpose)."""
        data = obj.encode() if isinstance(obj, str) else json.dumps(obj).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout and deadline tests)

    def log_message(self, *args) -> None:
        pass


class LoopbackServer:
    """A threaded HTTP server with `handler` on 127.0.0.1 (a free port), serving until `close()`."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
