"""A digest as the caller asks for it: JSON, Markdown, or the editor's HTML page.

``Accept`` decides (``text/markdown``, ``text/html``, JSON otherwise); ``?format=json|md|html``
overrides it so a browser can open the page from a plain link. A browser cannot send a bearer
header either: it may open the page once with ``?api_key=<key>``, which answers with a redirect
to the same URL without the key and puts the key in an HttpOnly, SameSite=Lax cookie scoped to
/v1, accepted on these read-only pages only. The key is then in no history entry, log line or
Referer (the page also sends ``Referrer-Policy: no-referrer`` and loads nothing external).
"""

from __future__ import annotations

from typing import Literal

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from service.api.deps import KEY_COOKIE, KEY_QUERY
from service.api.views import digest_view
from service.errors import Unauthorized
from service.pipeline import render
from service.store.digests import DigestRecord

Format = Literal["json", "md", "html"]

_MEDIA: dict[str, Format] = {
    "application/json": "json",
    "text/markdown": "md",
    "text/x-markdown": "md",
    "text/html": "html",
}
# Strict enough for a page that only shows escaped text; no scripts, no external assets.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "private, no-store",
}
COOKIE_MAX_AGE_S = 8 * 3600


def choose_format(request: Request, override: Format | None) -> Format:
    """The rendering with the highest ``q`` in Accept; JSON when nothing we serve is named."""
    if override is not None:
        return override
    best: tuple[float, int, Format] = (0.0, 0, "json")
    for position, item in enumerate(request.headers.get("accept", "").split(",")):
        media, *params = (part.strip() for part in item.split(";"))
        fmt = _MEDIA.get(media.lower())
        if fmt is None:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        # Higher q wins; on a tie, the type listed first.
        if q > best[0] or (q == best[0] and -position > best[1]):
            best = (q, -position, fmt)
    return best[2]


def browser_login(request: Request) -> Response | None:
    """Move ``?api_key=`` into the cookie with a redirect; None when the URL carries no key."""
    key = request.query_params.get(KEY_QUERY)
    if not key:
        return None
    # A cookie carries latin-1 only; no configured key is anything but printable ASCII anyway.
    if not (key.isascii() and key.isprintable()):
        raise Unauthorized("invalid API key")
    target = request.url.remove_query_params(KEY_QUERY)
    response = RedirectResponse(target.path + (f"?{target.query}" if target.query else ""), status_code=303,
                                headers={"Referrer-Policy": "no-referrer", "Cache-Control": "no-store"})
    response.set_cookie(KEY_COOKIE, key, max_age=COOKIE_MAX_AGE_S, path="/v1/", httponly=True, samesite="lax",
                        secure=request.url.scheme == "https")
    return response


def render_digest(record: DigestRecord, fmt: Format) -> Response:
    headers = {"Vary": "Accept"}
    if fmt == "html":
        return HTMLResponse(render.digest_html(record.digest), headers={**headers, **_PAGE_HEADERS})
    if fmt == "md":
        return Response(render.digest_markdown(record.digest), media_type="text/markdown; charset=utf-8",
                        headers=headers)
    return JSONResponse(digest_view(record).model_dump(mode="json"), headers=headers)
