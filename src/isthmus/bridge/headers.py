"""What an edge's answer may say to a browser: the header policy for proxied responses.

Edges are not trusted with the bridge's web origin. Every proxied answer (and every
answer of a bridge-hosted plugin) goes through ``relay_headers``: no cookies, no script,
active content types as attachments, redirects only inside the edge's own namespace.
The policy is per-response header work only, never per body byte. docs/api.md lists it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from ..sdk.ui import endpoint_problem

# -- what an edge's answer may say to a browser --------------------------------------------------
#
# An edge is another machine, possibly hostile, yet its answers come from the bridge's origin,
# where the Explorer's session cookie lives. So a proxied answer is never a page of this site:
# it may not set or clear the bridge's cookies and storage, set the origin's policies, redirect
# or preload elsewhere, or run script. The work is per response header, never per body byte.

RESPONSE_DROP = frozenset({
    # hop-by-hop: the bridge's server frames the answer itself
    b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"proxy-connection", b"te",
    b"trailer",
    # the bridge's own: one id per request, made by the bridge (the edge's would be a forgery)
    b"x-request-id",
    # the origin's state: only the bridge sets its cookies or wipes them
    b"set-cookie", b"set-cookie2", b"clear-site-data",
    # the origin's policies: the bridge's own (RESPONSE_ADD) replace the edge's
    b"content-security-policy", b"content-security-policy-report-only", b"x-content-security-policy",
    b"x-webkit-csp", b"x-frame-options", b"x-content-type-options", b"x-xss-protection",
    b"strict-transport-security", b"public-key-pins", b"public-key-pins-report-only", b"expect-ct",
    b"permissions-policy", b"feature-policy", b"document-policy", b"origin-agent-cluster",
    b"cross-origin-opener-policy", b"cross-origin-opener-policy-report-only",
    b"cross-origin-embedder-policy", b"cross-origin-embedder-policy-report-only",
    b"cross-origin-resource-policy", b"service-worker-allowed", b"timing-allow-origin",
    b"x-permitted-cross-domain-policies", b"x-dns-prefetch-control", b"x-download-options",
    b"accept-ch", b"critical-ch", b"report-to", b"reporting-endpoints", b"nel",
    # navigation, preloading, credential prompts on the bridge's origin
    b"refresh", b"link", b"content-location", b"sourcemap", b"x-sourcemap", b"alt-svc",
    b"www-authenticate", b"proxy-authenticate",
    # decided below: location (kept only inside the edge), content-type, content-disposition
    b"location", b"content-type", b"content-disposition",
})
# + every access-control-* header: no CORS grants on the bridge's origin from an edge
CORS_PREFIX = b"access-control-"
# Types a browser shows as inert data: served inline. Any other type (HTML, XML, SVG, PDF,
# unknown, missing, several) is served as an attachment, so navigating to it downloads it.
INLINE_TYPES = frozenset({
    b"application/json", b"application/x-ndjson", b"application/octet-stream", b"application/msgpack",
    b"application/x-msgpack", b"text/plain", b"text/csv", b"text/tab-separated-values",
    b"text/event-stream", b"image/png", b"image/jpeg", b"image/gif", b"image/webp", b"image/avif",
    b"image/bmp",
})
# Types a page of this origin could run or apply as a subresource (script, module, worker,
# stylesheet, wasm) whatever the disposition: their Content-Type becomes octet-stream, which
# nosniff forbids to execute.
SUBRESOURCE_TYPES = frozenset({
    b"text/javascript", b"application/javascript", b"application/ecmascript", b"application/x-ecmascript",
    b"application/x-javascript", b"text/ecmascript", b"text/javascript1.0", b"text/javascript1.1",
    b"text/javascript1.2", b"text/javascript1.3", b"text/javascript1.4", b"text/javascript1.5",
    b"text/jscript", b"text/livescript", b"text/x-ecmascript", b"text/x-javascript", b"text/css",
    b"application/wasm",
})
OCTET_STREAM = b"application/octet-stream"
ATTACHMENT = b"attachment"
# No script, no plugins, no forms, no framing: a sandboxed, opaque-origin document at most.
PROXIED_CSP = b"sandbox; default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
RESPONSE_ADD = (
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", PROXIED_CSP),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-resource-policy", b"same-origin"),
)

def relay_headers(raw: Any, edge: str) -> list[tuple[bytes, bytes]]:
    """The headers a client gets for an edge's answer (the policy above); ValueError if malformed.

    Header names compare case-insensitively: a hostile edge may spell ``Set-Cookie`` as it likes.
    """
    out: list[tuple[bytes, bytes]] = []
    ctype: bytes | None = None
    ctypes = 0
    disposition: bytes | None = None
    location: bytes | None = None
    for key, value in raw or ():
        if type(key) is not bytes or type(value) is not bytes:
            raise ValueError("header names and values must be bytes")
        name = key.lower()
        if name in RESPONSE_DROP:
            if name == b"content-type":
                ctype = value
                ctypes += 1
            elif name == b"content-disposition":
                disposition = value
            elif name == b"location":
                location = value
        elif not name.startswith(CORS_PREFIX):
            out.append((key, value))
    if ctype is None or ctypes != 1:
        ctype = OCTET_STREAM  # none, or several to pick from: nothing a browser should guess about
        essence = b""
    else:
        essence = ctype.split(b";", 1)[0].strip().lower()
    if essence in INLINE_TYPES or (essence.startswith(b"application/") and essence.endswith(b"+json")):
        out.append((b"content-type", ctype))
        if disposition is not None:
            out.append((b"content-disposition", disposition))
    else:
        out.append((b"content-type", OCTET_STREAM if essence in SUBRESOURCE_TYPES else ctype))
        if disposition is None or disposition.lstrip()[:10].lower() != ATTACHMENT:
            disposition = ATTACHMENT
        out.append((b"content-disposition", disposition))
    if location is not None:
        target = _edge_location(location, edge)
        if target is not None:
            out.append((b"location", target))
    out.extend(RESPONSE_ADD)
    return out


def _edge_location(location: bytes, edge: str) -> bytes | None:
    """A redirect stays on its edge: ``/plugin/x`` becomes ``/{edge}/plugin/x``; anything else
    (another origin, ``//host``, a ``..`` in any spelling, a backslash) is dropped.

    An edge sees paths without the ``/{edge}`` prefix, so its redirects need it added anyway;
    a 307 to another edge would otherwise re-send the request, cookie and all, over there.
    """
    try:
        text = location.decode("ascii")
    except UnicodeDecodeError:
        return None
    if not edge or not text.startswith("/") or endpoint_problem(text[1:]) is not None:
        return None
    return ("/" + quote(edge, safe="") + text).encode("ascii")
