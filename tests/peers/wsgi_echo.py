"""A WSGI app (the standard library's wsgiref server) that answers every request with the
request headers it received, as its WSGI environ shows them, for mcp-warden's end-to-end tests.

Usage: python wsgi_echo.py PORT

WSGI folds header names: `X-Auth_Subject` and `X-Auth-Subject` both become
`HTTP_X_AUTH_SUBJECT` (joined with a comma), which is what makes spoofing by name variants
possible. The answer is a JSON object of every `HTTP_*` variable plus `REMOTE_ADDR`.
"""

import json
import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server


def app(environ, start_response):
    seen = {k: v for k, v in environ.items() if k.startswith("HTTP_") or k == "REMOTE_ADDR"}
    body = json.dumps(seen).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


if __name__ == "__main__":
    server = make_server("127.0.0.1", int(sys.argv[1]), app, handler_class=QuietHandler)
    print("ready", flush=True)
    server.serve_forever()
