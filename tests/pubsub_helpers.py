"""What the pub/sub tests share: a fan-out server and its clients, and a
throwaway ``redis-server``."""

from __future__ import annotations

import importlib.util
import math
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio
from conftest import server_url
from raw_http import HOST

from trio_websocket import (
    FanOut,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    open_websocket_url,
)
from trio_websocket._settings import Compression

TIMEOUT = 10
REDIS_SERVER = shutil.which("redis-server")
needs_coredis = pytest.mark.skipif(
    importlib.util.find_spec("coredis") is None,
    reason="coredis is not installed (pip install 'trio-websocket[redis]')",
)
needs_redis_server = pytest.mark.skipif(
    REDIS_SERVER is None,
    reason="redis-server is not installed (apt-get install redis-server)",
)


class Joiner:
    """A handler that accepts, joins the fan-out group, and waits."""

    def __init__(self) -> None:
        self.group: FanOut | None = None
        self.by_path: dict[str, WebSocketConnection] = {}

    async def __call__(self, request: WebSocketRequest) -> None:
        connection = await request.accept()
        self.by_path[request.path] = connection
        assert self.group is not None
        self.group.add(connection)
        await trio.sleep_forever()


async def start_server(nursery: trio.Nursery, handler: Joiner) -> WebSocketServer:
    """A server whose sockets have small send buffers, so a stalled peer blocks."""
    sock = trio.socket.socket()
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_SNDBUF, 8192)
    await sock.bind((HOST, 0))
    sock.listen()
    server = WebSocketServer(handler, [trio.SocketListener(sock)])
    started: WebSocketServer = await nursery.start(server.run)
    return started


@asynccontextmanager
async def clients(
    server: WebSocketServer, count: int, compression: Compression = None
) -> AsyncIterator[list[WebSocketConnection]]:
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                open_websocket_url(
                    server_url(server, f"/client{n}"),
                    max_message_size=math.inf,
                    compression=compression,  # None: the server frames once
                )
            )
            for n in range(count)
        ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A throwaway redis-server on a loopback port, with no persistence."""

    def __init__(self, *options: str, tls: bool = False) -> None:
        self.port = free_port()
        self.options = options
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                *(("--port", "0", "--tls-port") if self.tls else ("--port",)),
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                *self.options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=TIMEOUT)
            self.process = None

    async def ready(self) -> None:
        with trio.fail_after(TIMEOUT):
            while True:
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", self.port)
                except OSError:
                    await trio.sleep(0.02)
                    continue
                await stream.aclose()
                return


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


class TaskSteps(trio.abc.Instrument):
    """Counts the steps of the tasks whose name ends with ``suffix``.

    Each step after a task's first is a wake-up: for example
    ``TaskSteps("FanOut._pump")`` counts the fan-out's relaying passes.
    """

    def __init__(self, suffix: str) -> None:
        self.suffix = suffix
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith(self.suffix):
            self.steps += 1
