"""What the client says about itself: basic auth, ``Origin``, ``User-Agent``."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import trio

from trio_websocket import (
    USER_AGENT,
    WebSocketRequest,
    WebSocketServer,
    open_websocket,
    open_websocket_pair,
    open_websocket_url,
    serve_websocket,
)

Headers = list[tuple[bytes, bytes]]


@pytest.fixture
async def seen(nursery: trio.Nursery) -> tuple[WebSocketServer, list[Headers]]:
    """A server that records each request's headers, and the record."""
    requests: list[Headers] = []

    async def handler(request: WebSocketRequest) -> None:
        requests.append(request.headers)
        await request.accept()

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    return server, requests


def values(headers: Headers, name: bytes) -> list[bytes]:
    return [value for key, value in headers if key == name]


async def request_headers(
    seen: tuple[WebSocketServer, list[Headers]], user_info: str = "", **options: Any
) -> Headers:
    """Connect to the recording server and return the headers it saw."""
    server, requests = seen
    url = f"ws://{user_info}127.0.0.1:{server.port}/"
    with trio.fail_after(5):
        async with open_websocket_url(url, **options):
            pass
    [headers] = requests
    return headers


def basic(credentials: str) -> bytes:
    return b"Basic " + base64.b64encode(credentials.encode())


@pytest.mark.parametrize(
    ("user_info", "credentials"),
    [
        ("user:pass@", "user:pass"),
        ("user@", "user:"),
        ("us%40er:p%3Ass%2F%25@", "us@er:p:ss/%"),
        ("j%C3%BCrgen:p%C3%A4ss@", "jürgen:päss"),  # UTF-8, as RFC 7617 says
    ],
)
async def test_url_user_info_becomes_basic_auth(
    seen: tuple[WebSocketServer, list[Headers]], user_info: str, credentials: str
) -> None:
    headers = await request_headers(seen, user_info)
    assert values(headers, b"authorization") == [basic(credentials)]


async def test_no_user_info_no_authorization(
    seen: tuple[WebSocketServer, list[Headers]],
) -> None:
    assert values(await request_headers(seen), b"authorization") == []


async def test_authorization_in_extra_headers_wins(
    seen: tuple[WebSocketServer, list[Headers]],
) -> None:
    extra = [("Authorization", "Bearer token")]
    headers = await request_headers(seen, "user:pass@", extra_headers=extra)
    assert values(headers, b"authorization") == [b"Bearer token"]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, [USER_AGENT.encode()]),
        ({"user_agent": "my-bot/2.0"}, [b"my-bot/2.0"]),
        ({"user_agent": None}, []),
        ({"extra_headers": [(b"User-Agent", b"from-extra")]}, [b"from-extra"]),
    ],
)
async def test_user_agent(
    seen: tuple[WebSocketServer, list[Headers]],
    options: dict[str, Any],
    expected: list[bytes],
) -> None:
    headers = await request_headers(seen, **options)
    assert values(headers, b"user-agent") == expected


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, []),
        ({"origin": "https://app.example"}, [b"https://app.example"]),
        (
            {"origin": "https://a.example", "extra_headers": [("Origin", "https://b")]},
            [b"https://b"],
        ),
    ],
)
async def test_origin(
    seen: tuple[WebSocketServer, list[Headers]],
    options: dict[str, Any],
    expected: list[bytes],
) -> None:
    headers = await request_headers(seen, **options)
    assert values(headers, b"origin") == expected


async def test_host_and_port_entry_point_sends_origin_and_user_agent(
    seen: tuple[WebSocketServer, list[Headers]],
) -> None:
    server, requests = seen
    async with open_websocket(
        "127.0.0.1",
        server.port,
        "/",
        use_ssl=False,
        origin="https://app.example",
        user_agent="agent",
    ):
        pass
    [headers] = requests
    assert values(headers, b"origin") == [b"https://app.example"]
    assert values(headers, b"user-agent") == [b"agent"]


@pytest.mark.parametrize("field", ["origin", "user_agent"])
async def test_header_values_cannot_inject_lines(
    seen: tuple[WebSocketServer, list[Headers]], field: str
) -> None:
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        await request_headers(seen, **{field: "x\r\nInjected: yes"})


async def test_user_agent_identifies_this_library() -> None:
    async with open_websocket_pair() as (client, server):
        headers = dict(server.handshake_headers)
        assert client.is_client
    assert b"trio-websocket/" in headers[b"user-agent"]
