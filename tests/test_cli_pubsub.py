"""``trio-websocket serve --broadcast --pubsub redis://...``: one chat room
across worker processes, against a redis-server this test starts."""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio
from pubsub_helpers import RedisServer, needs_coredis, needs_redis_server, redis_server

from trio_websocket import WebSocketConnection, open_websocket_url
from trio_websocket._reuse_port import reuse_port_supported
from trio_websocket.cli import run
from trio_websocket.cli._common import RedisAddress
from trio_websocket.cli._parser import redis_url

__all__ = ["redis_server"]  # a fixture

TIMEOUT = 30
CLI = [sys.executable, "-m", "trio_websocket"]
CLIENTS = 12
SERVE = [*CLI, "serve", "--port", "0", "--broadcast"]
PUBSUB_1 = ["--pubsub", "redis://127.0.0.1:1"]  # nothing listens on port 1

pytestmark = needs_coredis
needs_redis = needs_redis_server


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379", RedisAddress("127.0.0.1", 6379)),
        ("redis://localhost", RedisAddress("localhost", 6379)),
        ("redis://:s%40cret@10.0.0.1:7000/0", RedisAddress("10.0.0.1", 7000, "s@cret")),
        ("redis://default:pw@[::1]:6380", RedisAddress("::1", 6380, "pw")),
    ],
)
def test_redis_urls(url: str, expected: RedisAddress) -> None:
    assert redis_url(url) == expected
    assert "pw" not in str(expected) and "cret" not in str(expected)


@pytest.mark.parametrize(
    "url",
    [
        "rediss://127.0.0.1",
        "http://127.0.0.1:6379",
        "127.0.0.1:6379",
        "redis://",
        "redis://h:notaport",
        "redis://alice:pw@h",
        "redis://h/not-a-db",
    ],
)
def test_bad_redis_urls(url: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        redis_url(url)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--broadcast", "--workers", "2"], "--pubsub"),
        (["--pubsub", "redis://h"], "--pubsub goes with --broadcast"),
        (["--broadcast", "--pubsub", "rediss://h"], "must be redis://"),
    ],
)
def test_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["serve", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]])
def test_unreachable_redis_is_one_error_line(workers: list[str]) -> None:
    result = subprocess.run(
        [*CLI, "serve", "--port", "0", "--broadcast", *workers, *PUBSUB_1],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(
        "error: cannot connect to Redis at redis://127.0.0.1:1: "
    )
    assert result.stderr.count("\n") == 1, result.stderr


async def wait_until_everyone_hears(clients: list[WebSocketConnection]) -> None:
    """Send probes until every client gets one: then all have joined the room."""
    waiting = set(range(len(clients)))
    for attempt in range(100):
        await clients[0].send_message(f"probe {attempt}")
        for index in sorted(waiting):
            with trio.move_on_after(0.2):
                while not str(await clients[index].get_message()).startswith("probe"):
                    pass
                waiting.discard(index)
        if not waiting:
            return
    raise AssertionError(f"clients {sorted(waiting)} never heard the room")


async def chat_messages(ws: WebSocketConnection, until: str) -> list[str]:
    """The chat messages ``ws`` gets before ``until``, probes left out."""
    received = []
    while (message := str(await ws.get_message())) != until:
        if not message.startswith("probe"):
            received.append(message)
    return received


async def run_chat(url: str) -> None:
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(open_websocket_url(url))
            for _ in range(CLIENTS)
        ]
        await wait_until_everyone_hears(clients)
        sent = [f"hello from client {n}" for n in range(CLIENTS)]
        for ws, message in zip(clients, sent, strict=True):
            nursery.start_soon(ws.send_message, message)
        # Redis delivers in the order things were published: "end" is
        # published once every message has reached client 0, so a duplicate
        # would arrive before it.
        first = await chat_messages_until_all(clients[0], sent)
        await clients[-1].send_message("end")
        rest = [await chat_messages(ws, "end") for ws in clients]
        assert Counter(first + rest[0]) == Counter(sent)
        for received in rest[1:]:
            assert Counter(received) == Counter(sent)


async def chat_messages_until_all(
    ws: WebSocketConnection, sent: list[str]
) -> list[str]:
    received: list[str] = []
    while not set(sent) <= set(received):
        message = str(await ws.get_message())
        if not message.startswith("probe"):
            received.append(message)
    return received


async def read_banner(stdout: trio.abc.ReceiveStream) -> tuple[str, str]:
    """The server's first line, and the URL it names."""
    banner = b""
    while not banner.endswith(b"\n"):
        chunk = await stdout.receive_some(1)
        assert chunk, banner
        banner += chunk
    match = re.search(r"ws://127\.0\.0\.1:\d+/", banner.decode())
    assert match, banner
    return banner.decode(), match.group()


@needs_redis
@pytest.mark.skipif(not reuse_port_supported(), reason="SO_REUSEPORT is Linux only")
async def test_workers_share_one_chat_room(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    await redis_server.ready()
    log = tmp_path / "serve.log"
    with log.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [
                *SERVE,
                "--workers",
                "2",
                "--pubsub",
                f"redis://127.0.0.1:{redis_server.port}",
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    try:
        assert process.stdout is not None
        with trio.fail_after(TIMEOUT):
            banner, url = await read_banner(process.stdout)
            assert "chat room" in banner
            assert "with 2 workers" in banner
            await run_chat(url)
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 0
    finally:
        if process.returncode is None:  # pragma: no cover
            process.kill()
            await process.wait()
    text = log.read_text()
    workers = Counter(re.findall(r" worker (\d+) \S+: \S+ connected to /", text))
    assert sum(workers.values()) == CLIENTS, text
    assert set(workers) == {"0", "1"}, text  # the kernel spread them
    assert "Traceback" not in text, text


@needs_redis
async def test_one_process_relays_through_redis(redis_server: RedisServer) -> None:
    await redis_server.ready()
    process = await trio.lowlevel.open_process(
        [*SERVE, "--pubsub", f"redis://127.0.0.1:{redis_server.port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        with trio.fail_after(TIMEOUT):
            _, url = await read_banner(process.stdout)
            await run_chat(url)
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 130
    finally:
        if process.returncode is None:  # pragma: no cover
            process.kill()
            await process.wait()
