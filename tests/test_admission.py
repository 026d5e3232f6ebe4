"""Admission: origins, basic auth, connection caps, request size limits."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from conftest import TIMEOUT, echo_messages, server_url
from raw_http import (
    HOST,
    exchange,
    plain_request,
    send_and_read_answer,
    upgrade_request,
)

from trio_websocket import (
    Admission,
    ConnectionRejected,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    open_websocket_url,
    serve_websocket,
)

Headers = list[tuple[str, str]]


class Recorder:
    """A handler that notes every request it is given, then echoes."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, request: WebSocketRequest) -> None:
        self.paths.append(request.path)
        if request.is_upgrade:
            await echo_messages(await request.accept())
        else:
            await request.reject(200, body=b"plain")


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


async def start(
    nursery: trio.Nursery, recorder: Recorder, admission: Admission
) -> WebSocketServer:
    server: WebSocketServer = await nursery.start(
        lambda task_status: serve_websocket(
            recorder,
            HOST,
            0,
            None,
            admission=admission,
            http_handler=recorder,
            task_status=task_status,
        )
    )
    return server


async def outcome(url: str, headers: Headers | None = None) -> int:
    """Try to connect: 101 when it works, else the refusal's status code."""
    try:
        with trio.fail_after(TIMEOUT):
            async with open_websocket_url(url, extra_headers=headers) as client:
                await client.send_message("ping")
                assert await client.get_message() == "ping"
    except ConnectionRejected as rejected:
        return rejected.status_code
    return 101


def basic(user: str, password: str) -> tuple[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return ("Authorization", f"Basic {token}")


SITE = "https://app.example"
SUBDOMAINS = re.compile(r"https://[a-z]+\.app\.example")


@pytest.mark.parametrize(
    ("origins", "headers", "expected"),
    [
        ({SITE}, [("Origin", SITE)], 101),
        ({SITE}, [("Origin", "https://evil.example")], 403),
        ({SITE}, [], 403),
        ({SITE, None}, [], 101),
        ([SUBDOMAINS], [("Origin", "https://chat.app.example")], 101),
        ([SUBDOMAINS], [("Origin", "https://chat.app.example.evil")], 403),
    ],
    ids=[
        "listed",
        "unlisted",
        "missing",
        "none-allowed",
        "regex",
        "regex-must-match-whole",
    ],
)
async def test_origins(
    nursery: trio.Nursery,
    recorder: Recorder,
    origins: set[str | None],
    headers: Headers,
    expected: int,
) -> None:
    server = await start(nursery, recorder, Admission(origins=origins))
    assert await outcome(server_url(server, "/o"), headers) == expected
    assert recorder.paths == (["/o"] if expected == 101 else [])


def check_password(user: str, password: str) -> bool:
    return (user, password) == ("alice", "s3cret")


@pytest.mark.parametrize(
    "credentials",
    [{"alice": "s3cret"}, check_password],
    ids=["mapping", "callable"],
)
@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([basic("alice", "s3cret")], 101),
        ([basic("alice", "wrong")], 401),
        ([basic("mallory", "s3cret")], 401),
        ([], 401),
        ([("Authorization", "Bearer abc")], 401),
        ([("Authorization", "Basic not base64!")], 401),
        ([("Authorization", "Basic " + base64.b64encode(b"alice").decode())], 401),
    ],
    ids=[
        "good",
        "bad-password",
        "unknown-user",
        "none",
        "bearer",
        "garbage",
        "no-colon",
    ],
)
async def test_basic_auth(
    nursery: trio.Nursery,
    recorder: Recorder,
    credentials: dict[str, str] | Callable[[str, str], bool],
    headers: Headers,
    expected: int,
) -> None:
    server = await start(nursery, recorder, Admission(basic_auth=credentials))
    assert await outcome(server_url(server), headers) == expected
    assert len(recorder.paths) == (1 if expected == 101 else 0)


#: A path of 300 bytes and a header of about 300 bytes.
LONG_PATH = "/" + "p" * 299
BIG_HEADER = ("X-Filler", "f" * 290)


@pytest.mark.parametrize(
    ("admission", "path", "headers", "expected"),
    [
        (Admission(max_request_line=200), "/short", [], 101),
        (Admission(max_request_line=200), LONG_PATH, [], 414),
        (Admission(max_header_size=1000), "/", [BIG_HEADER], 101),
        (Admission(max_header_size=1000), "/", [BIG_HEADER] * 4, 431),
        (Admission(max_header_size=1000), LONG_PATH, [], 101),
    ],
    ids=["line-ok", "line-long", "headers-ok", "headers-big", "limits-independent"],
)
async def test_request_size_limits(
    nursery: trio.Nursery,
    recorder: Recorder,
    admission: Admission,
    path: str,
    headers: Headers,
    expected: int,
) -> None:
    server = await start(nursery, recorder, admission)
    assert await outcome(server_url(server, path), headers) == expected
    assert len(recorder.paths) == (1 if expected == 101 else 0)


@pytest.mark.parametrize(
    ("admission", "request_bytes", "status"),
    [
        (Admission(origins={SITE}), upgrade_request(), 403),
        (
            Admission(origins={SITE}),
            upgrade_request(headers=[("Origin", SITE)] * 2),
            400,  # refused by the engine itself: two Origin headers
        ),
        (Admission(basic_auth={"a": "b"}), upgrade_request(), 401),
        (Admission(max_connections=0, retry_after=3), upgrade_request(), 503),
        (Admission(max_handshakes_per_ip=0, retry_after=3), upgrade_request(), 429),
        (Admission(max_request_line=50), upgrade_request("/" + "x" * 60), 414),
        (
            Admission(max_header_size=100),
            upgrade_request(headers=[("X-Big", "y" * 100)]),
            431,
        ),
    ],
    ids=["origin", "two-origins", "auth", "full", "handshakes", "line", "headers"],
)
async def test_refusals_are_complete_http_responses(
    nursery: trio.Nursery,
    recorder: Recorder,
    admission: Admission,
    request_bytes: bytes,
    status: int,
) -> None:
    server = await start(nursery, recorder, admission)
    with trio.fail_after(TIMEOUT):
        answer = await exchange(server.port, request_bytes)
    assert answer.status == status
    assert answer.headers["connection"] == "close"
    assert answer.headers["content-length"] == str(len(answer.body))
    assert answer.body
    if status == 401:
        assert answer.headers["www-authenticate"].startswith('Basic realm="')
    if status in (429, 503):
        assert answer.headers["retry-after"] == "3"
    assert recorder.paths == []


async def test_plain_http_is_left_to_the_http_handler(
    nursery: trio.Nursery, recorder: Recorder
) -> None:
    admission = Admission(origins={SITE}, basic_auth={"a": "b"})
    server = await start(nursery, recorder, admission)
    with trio.fail_after(TIMEOUT):
        answer = await exchange(server.port, plain_request("/health"))
    assert (answer.status, answer.body) == (200, b"plain")
    assert recorder.paths == ["/health"]


@asynccontextmanager
async def connected(url: str) -> AsyncIterator[WebSocketConnection]:
    async with open_websocket_url(url) as client:
        await client.send_message("hi")
        assert await client.get_message() == "hi"
        yield client


async def test_connection_cap_refuses_with_503_until_a_slot_frees(
    nursery: trio.Nursery, recorder: Recorder
) -> None:
    admission = Admission(max_connections=2, retry_after=30)
    server = await start(nursery, recorder, admission)
    url = server_url(server)
    async with connected(url), connected(url):
        with pytest.raises(ConnectionRejected) as rejected:
            async with open_websocket_url(url):
                pass  # pragma: no cover
    assert rejected.value.status_code == 503
    assert (b"retry-after", b"30") in rejected.value.headers
    await trio.testing.wait_all_tasks_blocked()  # the server saw both leave
    assert await outcome(url) == 101
    assert len(recorder.paths) == 3


async def test_handshake_cap_per_address_refuses_with_429(
    nursery: trio.Nursery, recorder: Recorder
) -> None:
    server = await start(nursery, recorder, Admission(max_handshakes_per_ip=2))
    url = server_url(server)
    async with (
        await trio.open_tcp_stream(HOST, server.port) as first,
        await trio.open_tcp_stream(HOST, server.port),
    ):
        # Two clients hold a handshake open without sending their request.
        await trio.testing.wait_all_tasks_blocked()
        assert await outcome(url) == 429
        # Once a handshake completes, its slot is free again.
        with trio.fail_after(TIMEOUT):
            answer = await send_and_read_answer(first, plain_request("/done"))
        assert answer.status == 200
        await trio.testing.wait_all_tasks_blocked()
        assert await outcome(url) == 101
        # Open connections do not count: only handshakes in progress do.
        async with connected(url), connected(url):
            pass
    assert recorder.paths == ["/done", "/", "/", "/"]
