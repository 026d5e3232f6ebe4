"""Dispatching requests to handlers by path (and host).

A :class:`Router` is itself a server handler. Give it to
:func:`serve_websocket` as the handler (and as ``http_handler`` if it has
plain HTTP routes too)::

    router = Router()
    router.route("/chat", chat_handler)
    router.route("/feed/{name}", feed_handler)        # request.path_params["name"]
    router.http("/healthz", static_response(b"ok\\n"))
    await serve_websocket(router, None, 8000, None, http_handler=router)
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from ._request import WebSocketRequest, set_path_params

Handler = Callable[[WebSocketRequest], Awaitable[object]]

# "{name}" matches one path segment, "{name:path}" the rest of the path.
_PARAMETER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(:path)?\}")


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Turn ``"/feed/{name}"`` into a regular expression matching paths.

    Text outside braces matches itself; ``{name}`` matches one non-empty
    path segment and ``{name:path}`` anything, slashes included.
    """
    if not pattern.startswith("/"):
        raise ValueError(f"a route pattern must start with '/': {pattern!r}")
    parts, position = [], 0
    for parameter in _PARAMETER.finditer(pattern):
        parts.append(re.escape(pattern[position : parameter.start()]))
        segment = ".+" if parameter.group(2) else "[^/]+"
        parts.append(f"(?P<{parameter.group(1)}>{segment})")
        position = parameter.end()
    parts.append(re.escape(pattern[position:]))
    return re.compile("".join(parts))


@dataclass(frozen=True)
class _Route:
    pattern: re.Pattern[str]
    handler: Handler
    host: str | None

    def match(self, host: str, path: str) -> dict[str, str] | None:
        if self.host is not None and self.host != host:
            return None
        found = self.pattern.fullmatch(path)
        if found is None:
            return None
        return {name: unquote(value) for name, value in found.groupdict().items()}


class Router:
    """A handler that passes each request to the first route that matches.

    Routes match the path without its query string; values of ``{name}``
    parameters are percent-decoded and given to the handler as
    ``request.path_params``. A route with ``host`` only matches requests
    whose ``Host`` header names that host (any port, any case).

    WebSocket upgrades are matched against the :meth:`route` table, plain
    HTTP requests (when the router is also the server's ``http_handler``)
    against the :meth:`http` table. A request no route matches gets 404.
    """

    def __init__(self) -> None:
        self._websocket: list[_Route] = []
        self._http: list[_Route] = []

    def route(self, pattern: str, handler: Handler, *, host: str | None = None) -> None:
        """Send WebSocket upgrades for ``pattern`` to ``handler(request)``."""
        self._websocket.append(
            _Route(compile_pattern(pattern), handler, _bare_host(host))
        )

    def http(self, pattern: str, handler: Handler, *, host: str | None = None) -> None:
        """Send plain HTTP requests for ``pattern`` to ``handler(request)``.

        The handler answers with ``await request.reject(200, body=...)``;
        :func:`static_response` makes such a handler.
        """
        self._http.append(_Route(compile_pattern(pattern), handler, _bare_host(host)))

    async def __call__(self, request: WebSocketRequest) -> None:
        """Dispatch ``request``, or answer 404."""
        routes = self._websocket if request.is_upgrade else self._http
        host = _bare_host(_request_host(request)) or ""
        path = urlsplit(request.path).path
        for route in routes:
            params = route.match(host, path)
            if params is not None:
                set_path_params(request, params)
                await route.handler(request)
                return
        await request.reject(404, body=b"Not Found\n")


def static_response(
    body: bytes,
    *,
    status_code: int = 200,
    content_type: str = "text/plain; charset=utf-8",
) -> Handler:
    """A plain HTTP handler that always answers with ``body``.

    A ``HEAD`` request gets the same headers, ``Content-Length`` included,
    and no body.

    For health checks and small static pages on the WebSocket port::

        router.http("/healthz", static_response(b"ok\\n"))
        router.http("/", static_response(PAGE, content_type="text/html"))
    """
    headers = [("Content-Type", content_type)]

    async def respond(request: WebSocketRequest) -> None:
        await request.reject(status_code, extra_headers=headers, body=body)

    return respond


def _request_host(request: WebSocketRequest) -> str | None:
    for name, value in request.headers:
        if name == b"host":
            return value.decode("latin-1")
    return None


def _bare_host(host: str | None) -> str | None:
    """A host name without its port, in lower case (IPv6 keeps brackets)."""
    if host is None:
        return None
    host = host.strip().lower()
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.partition(":")[0]
