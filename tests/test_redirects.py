"""Redirects during the opening handshake, against real servers on loopback.

The test servers answer paths listed in a redirect table with
``request.reject(status, Location)`` and accept any other path, sending the
path they were asked for and the ``Authorization`` they saw.
"""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme
from conftest import server_url

from trio_websocket import (
    ConnectionRejected,
    RedirectError,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    connect_websocket_url,
    open_websocket_url,
    serve_websocket,
)

Redirects = dict[str, tuple[int, str | None]]


class RedirectingServer:
    """A server that redirects the paths in ``redirects`` and accepts others."""

    def __init__(self) -> None:
        self.redirects: Redirects = {}
        self.requests: list[str] = []
        self.server: WebSocketServer | None = None

    async def handler(self, request: WebSocketRequest) -> None:
        self.requests.append(request.path)
        if request.path in self.redirects:
            status, location = self.redirects[request.path]
            headers = [(b"Location", location.encode())] if location else []
            await request.reject(status, extra_headers=headers)
            return
        auth = dict(request.headers).get(b"authorization", b"").decode()
        connection = await request.accept()
        await connection.send_message(json.dumps([request.path, auth]))

    def url(self, resource: str) -> str:
        assert self.server is not None
        return server_url(self.server, resource)


@pytest.fixture
async def plain(nursery: trio.Nursery) -> RedirectingServer:
    """A redirecting server without TLS."""
    site = RedirectingServer()
    site.server = await nursery.start(
        serve_websocket, site.handler, "127.0.0.1", 0, None
    )
    return site


@pytest.fixture
async def other(nursery: trio.Nursery) -> RedirectingServer:
    """A second redirecting server without TLS (another origin)."""
    site = RedirectingServer()
    site.server = await nursery.start(
        serve_websocket, site.handler, "127.0.0.1", 0, None
    )
    return site


@pytest.fixture
async def secure(
    nursery: trio.Nursery, server_ssl_context: ssl.SSLContext
) -> RedirectingServer:
    """A redirecting server over TLS."""
    site = RedirectingServer()
    site.server = await nursery.start(
        serve_websocket, site.handler, "127.0.0.1", 0, server_ssl_context
    )
    return site


async def landing(
    url: str, ssl_context: ssl.SSLContext | None = None, **options: Any
) -> list[str]:
    """Connect to ``url`` and return [path, authorization] where it landed."""
    with trio.fail_after(10):
        async with open_websocket_url(url, ssl_context, **options) as connection:
            message = await connection.get_message()
    assert isinstance(message, str)
    result: list[str] = json.loads(message)
    return result


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_each_redirect_status_is_followed(
    plain: RedirectingServer, status: int
) -> None:
    plain.redirects["/old"] = (status, "/new")
    assert (await landing(plain.url("/old")))[0] == "/new"
    assert plain.requests == ["/old", "/new"]


@pytest.mark.parametrize(
    ("start", "location", "end"),
    [
        ("/a/b/c", "d", "/a/b/d"),
        ("/a/b/c", "../x?q=1", "/a/x?q=1"),
        ("/a/b/c?old=1", "?new=2", "/a/b/c?new=2"),
        ("/a", "//127.0.0.1:{port}/abs", "/abs"),
        ("/a", "http://127.0.0.1:{port}/http", "/http"),
        ("/a", "ws://127.0.0.1:{port}/ws", "/ws"),
    ],
)
async def test_locations_are_resolved_against_the_current_url(
    plain: RedirectingServer, start: str, location: str, end: str
) -> None:
    assert plain.server is not None
    plain.redirects[start] = (302, location.format(port=plain.server.port))
    assert (await landing(plain.url(start)))[0] == end


async def test_redirect_to_another_server(
    plain: RedirectingServer, other: RedirectingServer
) -> None:
    plain.redirects["/"] = (307, other.url("/there"))
    assert (await landing(plain.url("/")))[0] == "/there"
    assert other.requests == ["/there"]


async def test_chain_of_redirects(plain: RedirectingServer) -> None:
    plain.redirects.update({"/1": (301, "/2"), "/2": (302, "/3"), "/3": (308, "/4")})
    assert (await landing(plain.url("/1")))[0] == "/4"


async def test_connect_websocket_url_follows_redirects(
    plain: RedirectingServer, nursery: trio.Nursery
) -> None:
    plain.redirects["/old"] = (301, "/new")
    connection: WebSocketConnection = await connect_websocket_url(
        nursery, plain.url("/old")
    )
    assert connection.path == "/new"
    await connection.aclose()


@pytest.mark.parametrize(
    "target", ["ws://127.0.0.1:{port}/", "http://127.0.0.1:{port}/"]
)
async def test_no_downgrade_from_tls(
    secure: RedirectingServer,
    plain: RedirectingServer,
    client_ssl_context: ssl.SSLContext,
    target: str,
) -> None:
    assert plain.server is not None
    secure.redirects["/"] = (302, target.format(port=plain.server.port))
    with pytest.raises(RedirectError, match="from TLS") as caught:
        await landing(secure.url("/"), client_ssl_context)
    assert caught.value.url.startswith("ws://")
    assert isinstance(caught.value.__cause__, ConnectionRejected)
    assert plain.requests == []


async def test_upgrade_to_tls_is_followed(
    plain: RedirectingServer,
    secure: RedirectingServer,
    ca: trustme.CA,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The default context (used for wss:// without ssl_context) trusts the
    # test CA through OpenSSL's SSL_CERT_FILE.
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    plain.redirects["/"] = (301, secure.url("/tls").replace("wss:", "https:"))
    assert (await landing(plain.url("/")))[0] == "/tls"


async def test_max_redirects_zero_surfaces_the_redirect(
    plain: RedirectingServer,
) -> None:
    plain.redirects["/old"] = (302, "/new")
    with pytest.raises(ConnectionRejected) as caught:
        await landing(plain.url("/old"), max_redirects=0)
    assert caught.value.status_code == 302
    assert (b"location", b"/new") in caught.value.headers
    assert plain.requests == ["/old"]


@pytest.mark.parametrize("limit", [1, 3, None])
async def test_redirect_loop_ends_after_max_redirects(
    plain: RedirectingServer, limit: int | None
) -> None:
    plain.redirects.update({"/a": (302, "/b"), "/b": (302, "/a")})
    options: dict[str, Any] = {} if limit is None else {"max_redirects": limit}
    with pytest.raises(RedirectError, match="gave up after") as caught:
        await landing(plain.url("/a"), **options)
    followed = 10 if limit is None else limit  # 10 is the default
    assert len(plain.requests) == followed + 1
    assert isinstance(caught.value.__cause__, ConnectionRejected)


@pytest.mark.parametrize(
    ("status", "location"), [(302, None), (300, "/x"), (304, "/x")]
)
async def test_other_answers_surface_as_rejections(
    plain: RedirectingServer, status: int, location: str | None
) -> None:
    plain.redirects["/"] = (status, location)
    with pytest.raises(ConnectionRejected) as caught:
        await landing(plain.url("/"))
    assert caught.value.status_code == status
    assert plain.requests == ["/"]


@pytest.mark.parametrize("location", ["ftp://127.0.0.1/", "mailto:someone@example"])
async def test_redirect_to_another_scheme_is_refused(
    plain: RedirectingServer, location: str
) -> None:
    plain.redirects["/"] = (302, location)
    with pytest.raises(RedirectError, match="cannot follow"):
        await landing(plain.url("/"))


async def test_credentials_follow_same_origin_redirects_only(
    plain: RedirectingServer, other: RedirectingServer
) -> None:
    plain.redirects.update({"/a": (302, "/b"), "/b": (302, other.url("/c"))})
    plain.redirects["/same"] = (302, "/landed")
    url = plain.url("/same").replace("ws://", "ws://user:pw@")
    _, auth = await landing(url)
    assert auth.startswith("Basic ")
    url = plain.url("/a").replace("ws://", "ws://user:pw@")
    assert await landing(url) == ["/c", ""]


async def test_redirect_may_bring_its_own_credentials(
    plain: RedirectingServer, other: RedirectingServer
) -> None:
    plain.redirects["/"] = (302, other.url("/c").replace("ws://", "ws://new:pw@"))
    _, auth = await landing(plain.url("/"))
    assert auth == "Basic bmV3OnB3"  # new:pw
