"""Whether a browser sent a request for another site's page: the one check behind refusing cross-site
requests that would start a generation (CSRF), a plain function of header values so the WebSocket's
handshake can run it too.

Not a per-visitor form token: pages must stay cacheable, one HTML for everyone. Browsers say where a request
comes from themselves, and a page cannot make them lie:

- `Sec-Fetch-Site` (sent by every current browser to an HTTPS or loopback address) is the browser's own
  verdict, trusted over `Origin` (which a TLS-ending proxy can make look foreign to us): `same-origin`
  passes, and so does `none` (the person typed or bookmarked the address). `cross-site` is refused, and so
  is `same-site`: a sibling subdomain (user content, another team's app) is not this site, and a page there
  must not spend what the request would. A value browsers never send is refused too; a non-browser sends
  no header at all and is not concerned.
- Without it (older browsers, plain-HTTP addresses), `Origin`, compared with the request's own origin: a
  mismatch is refused, and so is `Origin: null`, the opaque origin of sandboxed frames, file: pages and some
  redirects, which can be anyone.
- Neither header: not a browser's request (curl, a service) — a browser sends one of them on every
  cross-origin POST — so it passes.
"""

from __future__ import annotations

from urllib.parse import urlsplit

# The Sec-Fetch-Site values that mean "not another site".
_OURS = frozenset({"same-origin", "none"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
# A WebSocket's own address is ws(s)://, but the page that opens it, whose origin it is compared with, is
# served over http(s)://.
_PAGE_SCHEMES = {"ws": "http", "wss": "https"}
_SHOWN_CHARACTERS = 100


def origin_of(scheme: str, netloc: str) -> str:
    """The origin of `scheme://netloc` as a browser writes it in `Origin` (RFC 6454): lower case, the
    scheme's default port left out; a WebSocket's `ws`/`wss` is its page's `http`/`https`."""
    scheme = _PAGE_SCHEMES.get(scheme.lower(), scheme.lower())
    return _serialized(f"{scheme}://{netloc}") or f"{scheme}://{netloc}".lower()


def cross_site_refusal(sec_fetch_site: str | None, origin: str | None, own_origin: str) -> str | None:
    """Why a request that says `Sec-Fetch-Site: sec_fetch_site` and `Origin: origin` (None: not sent) comes
    from another site than `own_origin` (see `origin_of`), for a person to read ("This request came from
    another site (Origin: https://evil.example)"; the caller says what to do instead); None when it does not.
    """
    if sec_fetch_site is not None:
        site = sec_fetch_site.strip().lower()
        if site in _OURS:
            return None
        return f"This request came from another site (Sec-Fetch-Site: {_shown(site)})"
    if origin is None:
        return None
    origin = origin.strip()
    if origin == "null":
        return "This request came from another site (Origin: null, a sandboxed or local page)"
    if _serialized(origin) == _serialized(own_origin):
        return None
    return f"This request came from another site (Origin: {_shown(origin)})"


def _serialized(origin: str) -> str | None:
    """`origin` in the one spelling two equal origins share; None when it is not an origin at all."""
    try:
        parts = urlsplit(origin)
        port = parts.port  # a ValueError when it is not a number
    except ValueError:
        return None
    host = parts.hostname
    beyond_an_origin = parts.username or parts.password or parts.path or parts.query or parts.fragment
    if not parts.scheme or not host or beyond_an_origin:
        return None
    host = f"[{host}]" if ":" in host else host  # IPv6 keeps its brackets
    if port is None or port == _DEFAULT_PORTS.get(parts.scheme):
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def _shown(value: str) -> str:
    """A header value quoted in a message: bounded, since a client chooses it."""
    return value if len(value) <= _SHOWN_CHARACTERS else value[:_SHOWN_CHARACTERS] + "…"
