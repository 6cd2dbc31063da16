"""Who may use the web app: beyond loopback, only a browser that holds the server's access token.

The token is random, printed with the URL when the server starts (as Jupyter does), and
travels once in the URL (`?token=...`); the server then keeps it in an HttpOnly, same-site
cookie, which the page's later requests and its websocket carry. Page, assets, websocket
and the uploads sent over it are refused (403) without it.
"""

from __future__ import annotations

import secrets

from aiohttp import web

TOKEN_COOKIE = "fetalbrainseg_token"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def new_token() -> str:
    return secrets.token_urlsafe(24)


def _same(given: str | None, token: str) -> bool:
    return given is not None and secrets.compare_digest(given.encode("utf8", "replace"), token.encode("utf8"))


def token_middleware(token: str):
    """An aiohttp middleware that serves only requests carrying `token` (query or cookie)."""

    @web.middleware
    async def require_token(request: web.Request, handler):
        if _same(request.query.get("token"), token):
            response = await handler(request)
            if not isinstance(response, web.WebSocketResponse):
                response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
            return response
        if _same(request.cookies.get(TOKEN_COOKIE), token):
            return await handler(request)
        raise web.HTTPForbidden(
            text="FetalBrainSeg: this server needs its access token; open the URL it printed when it started.\n"
        )

    return require_token


def protect(server, token: str) -> None:
    """Make a trame server refuse every request without `token` (call before it starts)."""
    server.controller.on_server_bind.add(
        lambda wslink_server: wslink_server.app.middlewares.append(token_middleware(token))
    )
