"""A WSGI app (the standard library's wsgiref server) that answers every request with the
request headers it received, as its WSGI environ shows them, for mcp-warden's end-to-end tests.

Usage: python wsgi_echo.py PORT

WSGI folds header names: `X-Auth_Subject` and `X-Auth-Subject` both become
`HTTP_X_AUTH_SUBJECT` (joined with a comma), which is what makes spoofing by name variants
possible. The answer is a JSON object of every `HTTP_*` variable plus `REMOTE_ADDR`; with an
`X-Echo-Back` request header, the `HTTP_X_*` ones also come back as response headers.
"""

import json
import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server


def app(environ, start_response):
    seen = {k: v for k, v in environ.items() if k.startswith("HTTP_") or k == "REMOTE_ADDR"}
    body = json.dumps(seen).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    if "HTTP_X_ECHO_BACK" in environ:
        # Also as response headers (`X-Foo-Bar`), to test what a proxy lets through.
        headers += [(k[5:].replace("_", "-").title(), v) for k, v in seen.items()
                    if k.startswith("HTTP_X_")]
    start_response("200 OK", headers)
    return [body]


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


if __name__ == "__main__":
    server = make_server("127.0.0.1", int(sys.argv[1]), app, handler_class=QuietHandler)
    print("ready", flush=True)
    server.serve_forever()
