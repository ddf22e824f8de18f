"""An upstream app that records every request it receives, in the test process, so a test can
assert that a refused request never reached the app."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Recorder:
    """A threaded HTTP server on 127.0.0.1 answering 200 `{"ok":true}` and keeping
    (method, path, headers) of every request."""

    def __init__(self):
        self.requests: list[tuple[str, str, dict]] = []
        lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                with lock:
                    recorder.requests.append((self.command, self.path, dict(self.headers)))
                body = b'{"ok":true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = do_PUT = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def count(self) -> int:
        return len(self.requests)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
