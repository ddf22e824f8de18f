"""A scripted, headless "browser" for the OAuth proxy flow.

It does what a user's browser does between an MCP client opening the authorization URL and the
client's redirect URI receiving the code: follows redirects, keeps cookies, signs in on the
oidc-provider devInteractions login page, confirms its consent prompt, and approves (or denies)
mcp-warden's consent page. No JavaScript; forms are parsed from the HTML.

Library use: `run(url, decision="approve", stop_at=None)` returns the final URL (the client's
redirect URI with `code`/`state`/`iss`, or an error). Command line (used as `x-www-browser` /
`$BROWSER` by mcp-remote): `browser.py URL` follows the flow including the final GET of the
client's loopback callback (or, with `BROWSER_STOP_AT=<prefix>`, prints the URL it stopped at
instead of requesting it). Exit status 0 when the flow reached the callback with a code.
"""

from __future__ import annotations

import os
import sys
from html.parser import HTMLParser
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx

MAX_STEPS = 30


class _Forms(HTMLParser):
    def __init__(self):
        super().__init__()
        self.forms: list[dict] = []
        self._current: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self._current = {"action": a.get("action", ""), "method": (a.get("method") or "get").lower(),
                             "inputs": [], "buttons": []}
            self.forms.append(self._current)
        elif self._current is not None and tag == "input" and a.get("name"):
            self._current["inputs"].append((a["name"], a.get("value", ""), a.get("type", "text")))
        elif self._current is not None and tag == "button" and a.get("name"):
            self._current["buttons"].append((a["name"], a.get("value", "")))

    def handle_endtag(self, tag):
        if tag == "form":
            self._current = None


def forms(html: str) -> list[dict]:
    parser = _Forms()
    parser.feed(html)
    return parser.forms


def fill(form: dict, decision: str, user: str) -> dict:
    """The fields a user would submit: credentials on a login form, the chosen button."""
    data = {}
    for name, value, kind in form["inputs"]:
        if name == "login":
            value = user
        elif name == "password" or kind == "password":
            value = "any-password"
        data[name] = value
    for name, value in form["buttons"]:
        if name == "decision":
            if value == decision:
                data[name] = value
        else:
            data.setdefault(name, value)
    return data


def run(url: str, decision: str = "approve", stop_at: str | None = None, user: str = "alice",
        client: httpx.Client | None = None, log=None) -> str:
    """Drives the flow from `url`; returns the URL where it stopped (`stop_at` prefix, or the
    last page). `log` gets one line per step."""
    return walk(url, decision, stop_at, user, client, log)[0]


def until_page(url: str, is_it, user: str = "alice", client: httpx.Client | None = None,
               log=None) -> httpx.Response:
    """Drives the flow from `url` until a page for which `is_it(response)` is true (e.g.
    mcp-warden's consent page after the sign-in); returns that response."""
    _, page = walk(url, "approve", None, user, client, log, until=is_it)
    if page is None:
        raise AssertionError("the flow ended without reaching the page")
    return page


def is_consent_page(r: httpx.Response) -> bool:
    """mcp-warden's consent page (its form posts to /consent)."""
    return r.status_code == 200 and any(f["action"] == "/consent" for f in forms(r.text))


def walk(url: str, decision: str = "approve", stop_at: str | None = None, user: str = "alice",
         client: httpx.Client | None = None, log=None, until=None) -> tuple[str, httpx.Response | None]:
    """The loop behind `run` and `until_page`: (URL where it stopped, the `until` page if any)."""
    own = client is None
    client = client or httpx.Client(timeout=15)
    say = log or (lambda _msg: None)
    method, target, data = "GET", url, None
    try:
        for _ in range(MAX_STEPS):
            if stop_at and target.startswith(stop_at):
                return target, None
            say(f"{method} {target}")
            r = client.request(method, target, data=data)
            if r.is_redirect:
                method, target, data = "GET", urljoin(target, r.headers["location"]), None
                continue
            if until is not None and until(r):
                return target, r
            page_forms = forms(r.text) if "html" in r.headers.get("content-type", "") else []
            if r.status_code == 200 and page_forms:
                form = page_forms[0]
                method = form["method"].upper()
                target, data = urljoin(target, form["action"]), fill(form, decision, user)
                if method == "GET":
                    target = str(httpx.URL(target, params=data))
                    data = None
                continue
            say(f"stopped at {r.status_code} {target}")
            return target, None
        raise RuntimeError("too many steps")
    finally:
        if own:
            client.close()


def code_of(url: str) -> tuple[str | None, dict]:
    """The `code` and all query parameters of a redirect URL."""
    q = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    return q.get("code"), q


if __name__ == "__main__":
    log_path = os.environ.get("BROWSER_LOG")
    out = open(log_path, "a") if log_path else sys.stderr

    def say(msg):
        print(msg, file=out, flush=True)

    stop_at = os.environ.get("BROWSER_STOP_AT") or None
    final = run(sys.argv[1], decision=os.environ.get("BROWSER_DECISION", "approve"), stop_at=stop_at, log=say)
    if stop_at:
        print(final, flush=True)  # for callers that capture the redirect instead of serving it
    code, _ = code_of(final)
    say(f"final {final.split('?')[0]} code={'yes' if code else 'no'}")
    sys.exit(0 if code else 1)
