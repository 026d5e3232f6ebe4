"""Routing by path and host, and plain HTTP answers on the WebSocket port."""

from __future__ import annotations

import pytest
import trio
from conftest import server_url
from raw_http import HOST, exchange, plain_request, upgrade_request

from trio_websocket import (
    ConnectionRejected,
    Router,
    WebSocketRequest,
    WebSocketServer,
    open_websocket_url,
    serve_websocket,
    static_response,
)
from trio_websocket._routing import Handler

#: Upper bound for any wait that should end promptly; only reached on a bug.
TIMEOUT = 10


def answering(label: str) -> Handler:
    """A handler that accepts and sends its label and the path parameters."""

    async def handler(request: WebSocketRequest) -> None:
        connection = await request.accept()
        params = " ".join(f"{k}={v}" for k, v in sorted(request.path_params.items()))
        await connection.send_message(f"{label} {params}".strip())

    return handler


def make_router() -> Router:
    router = Router()
    router.route("/chat", answering("chat"))
    router.route("/feed/{name}", answering("feed"))
    router.route("/files/{rest:path}", answering("files"))
    router.route("/u/{user}/posts/{post}", answering("post"))
    router.route("/host", answering("example"), host="Example.com")
    router.route("/host", answering("any host"))
    router.route("/first/{x}", answering("first"))
    router.route("/first/b", answering("second"))  # shadowed: first match wins
    router.http("/healthz", static_response(b"ok\n"))
    router.http(
        "/page", static_response(b"<p>hi</p>", content_type="text/html; charset=utf-8")
    )
    return router


@pytest.fixture
async def server(nursery: trio.Nursery) -> WebSocketServer:
    router = make_router()
    started: WebSocketServer = await nursery.start(
        lambda task_status: serve_websocket(
            router, HOST, 0, None, http_handler=router, task_status=task_status
        )
    )
    return started


async def first_message(url: str, headers: list[tuple[str, str]] | None = None) -> str:
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(url, extra_headers=headers) as client:
            message = await client.get_message()
    assert isinstance(message, str)
    return message


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/chat", "chat"),
        ("/feed/news", "feed name=news"),
        ("/feed/news?since=3", "feed name=news"),
        ("/feed/caf%C3%A9", "feed name=caf\u00e9"),
        ("/files/a/b/c.txt", "files rest=a/b/c.txt"),
        ("/u/ann/posts/7", "post post=7 user=ann"),
        ("/first/b", "first x=b"),
    ],
)
async def test_dispatch_by_path(
    server: WebSocketServer, path: str, expected: str
) -> None:
    assert await first_message(server_url(server, path)) == expected


@pytest.mark.parametrize(
    "path", ["/", "/nope", "/chat/more", "/feed/", "/feed/a/b", "/files/", "/healthz"]
)
async def test_unmatched_upgrades_get_404(server: WebSocketServer, path: str) -> None:
    with pytest.raises(ConnectionRejected) as rejected, trio.fail_after(TIMEOUT):
        async with open_websocket_url(server_url(server, path)):
            pass  # pragma: no cover
    assert rejected.value.status_code == 404


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("example.com", "example"),
        ("EXAMPLE.com:8080", "example"),
        ("other.example", "any host"),
        (None, "any host"),
    ],
)
async def test_dispatch_by_host(
    server: WebSocketServer, host: str | None, expected: str
) -> None:
    headers = None if host is None else [("Host", host)]
    assert await first_message(server_url(server, "/host"), headers) == expected


@pytest.mark.parametrize(
    ("path", "status", "content_type", "body"),
    [
        ("/healthz", 200, "text/plain; charset=utf-8", b"ok\n"),
        ("/page", 200, "text/html; charset=utf-8", b"<p>hi</p>"),
        ("/chat", 404, None, b"Not Found\n"),
        ("/elsewhere", 404, None, b"Not Found\n"),
    ],
)
async def test_plain_http_routes(
    server: WebSocketServer,
    path: str,
    status: int,
    content_type: str | None,
    body: bytes,
) -> None:
    with trio.fail_after(TIMEOUT):
        answer = await exchange(server.port, plain_request(path))
    assert (answer.status, answer.body) == (status, body)
    assert answer.headers.get("content-type") == content_type
    assert answer.headers["content-length"] == str(len(body))


async def test_a_handshake_for_a_plain_route_is_not_served_by_it(
    server: WebSocketServer,
) -> None:
    with trio.fail_after(TIMEOUT):
        answer = await exchange(server.port, upgrade_request("/page"))
    assert answer.status == 404


@pytest.mark.parametrize("pattern", ["chat", "", "feed/{name}"])
def test_patterns_must_be_absolute(pattern: str) -> None:
    with pytest.raises(ValueError):
        Router().route(pattern, answering("x"))
