"""Worker processes: SO_REUSEPORT, the supervisor, its signals and restarts.

The supervisor runs as a subprocess (a small program written to the test's
directory), on 127.0.0.1 and a free port; every wait is bounded.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio

from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    open_websocket_url,
    run_workers,
    serve_websocket,
    worker_index,
)
from trio_websocket._reuse_port import reuse_port_supported

pytestmark = pytest.mark.skipif(
    not reuse_port_supported(), reason="SO_REUSEPORT load balancing needs Linux"
)

TIMEOUT = 30
CLI = [sys.executable, "-m", "trio_websocket"]
ROOT = Path(__file__).resolve().parent.parent

# Echoes "INDEX PID MESSAGE"; prints the port once every worker serves.
APP = """
import os, sys
from trio_websocket import ConnectionClosed, run_workers, worker_index


async def echo(request):
    ws = await request.accept()
    try:
        while True:
            message = await ws.get_message()
            await ws.send_message(f"{worker_index()} {os.getpid()} {message}")
    except ConnectionClosed:
        pass


def ready(endpoints):
    print(endpoints[0].port, flush=True)


if __name__ == "__main__":
    run_workers(echo, "127.0.0.1", 0, workers=2, grace=5, ready=ready)
    print("stopped", flush=True)
"""


# -- SO_REUSEPORT in one process ---------------------------------------------------


async def test_reuse_port_lets_two_servers_share_a_port(nursery: trio.Nursery) -> None:
    served: list[str] = []

    async def handler(name: str, request: WebSocketRequest) -> None:
        served.append(name)
        ws = await request.accept()
        await ws.send_message(name)

    first: WebSocketServer = await nursery.start(
        partial(
            serve_websocket,
            partial(handler, "a"),
            "127.0.0.1",
            0,
            None,
            reuse_port=True,
        )
    )
    second: WebSocketServer = await nursery.start(
        partial(
            serve_websocket,
            partial(handler, "b"),
            "127.0.0.1",
            first.port,
            None,
            reuse_port=True,
        )
    )
    assert second.port == first.port
    with trio.fail_after(TIMEOUT):
        for _ in range(40):
            async with open_websocket_url(f"ws://127.0.0.1:{first.port}/") as ws:
                await ws.get_message()
            if {"a", "b"} <= set(served):
                break
    assert {"a", "b"} <= set(served), served


async def test_without_reuse_port_the_port_is_taken(nursery: trio.Nursery) -> None:
    async def handler(request: WebSocketRequest) -> None:
        await request.accept()

    server: WebSocketServer = await nursery.start(
        partial(serve_websocket, handler, "127.0.0.1", 0, None, reuse_port=True)
    )
    with pytest.raises(OSError) as caught:
        await serve_websocket(handler, "127.0.0.1", server.port, None)
    assert caught.value.errno == errno.EADDRINUSE


async def test_reuse_port_serves_tls(
    nursery: trio.Nursery,
    server_ssl_context: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
) -> None:
    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message(str(worker_index()))

    server: WebSocketServer = await nursery.start(
        partial(
            serve_websocket,
            handler,
            "127.0.0.1",
            0,
            server_ssl_context,
            reuse_port=True,
        )
    )
    url = f"wss://127.0.0.1:{server.port}/"
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(url, client_ssl_context) as ws:
            assert await ws.get_message() == "None"  # not a worker process


# -- Arguments run_workers refuses ----------------------------------------------------


def test_run_workers_needs_a_handler_that_pickles() -> None:
    async def local(request: WebSocketRequest) -> None:
        pass  # pragma: no cover

    with pytest.raises(TypeError, match="must pickle"):
        run_workers(local, "127.0.0.1", 0)


def test_run_workers_needs_a_context_factory(
    server_ssl_context: ssl.SSLContext,
) -> None:
    with pytest.raises(TypeError, match="function that returns the SSL context"):
        run_workers(print, "127.0.0.1", 0, server_ssl_context)  # type: ignore[arg-type]


# -- The supervisor --------------------------------------------------------------------


@asynccontextmanager
async def supervisor(tmp_path: Path) -> AsyncIterator[tuple[trio.Process, int, Path]]:
    """Run the app; yield its process, its port and the file of its stderr."""
    app = tmp_path / "workerapp.py"
    app.write_text(APP, encoding="utf-8")
    log = tmp_path / "stderr.txt"
    with log.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [sys.executable, str(app)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    try:
        assert process.stdout is not None
        with trio.fail_after(TIMEOUT):
            line = await read_line(process.stdout)
        assert line.strip().isdigit(), line + log.read_text()
        yield process, int(line), log
    finally:
        if process.returncode is None:
            process.kill()  # its workers see the end of their pipe and stop
        with trio.fail_after(TIMEOUT):
            await process.wait()


async def read_line(stream: trio.abc.ReceiveStream) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some(1)
        if not chunk:
            break
        data += chunk
    return data.decode()


async def ask(port: int) -> tuple[int, int]:
    """Connect, send a message; the (worker index, pid) that echoed it."""
    async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
        await ws.send_message("hi")
        index, pid, message = str(await ws.get_message()).split(" ", 2)
    assert message == "hi"
    return int(index), int(pid)


async def workers_seen(port: int, count: int = 100) -> dict[int, int]:
    """Ask until both workers have answered; their pids by index."""
    pids: dict[int, int] = {}
    for _ in range(count):
        index, pid = await ask(port)
        pids[index] = pid
        if len(pids) == 2:
            break
    return pids


async def test_connections_land_on_every_worker_and_sigterm_closes_with_1001(
    tmp_path: Path,
) -> None:
    async with supervisor(tmp_path) as (process, port, _):
        with trio.fail_after(TIMEOUT):
            pids = await workers_seen(port)
            assert sorted(pids) == [0, 1]
            assert len(set(pids.values())) == 2
            assert process.pid not in pids.values()
            url = f"ws://127.0.0.1:{port}/"
            async with (
                open_websocket_url(url) as ws1,
                open_websocket_url(url) as ws2,
            ):
                for ws in (ws1, ws2):
                    await ws.send_message("hi")
                    await ws.get_message()
                process.send_signal(signal.SIGTERM)
                for ws in (ws1, ws2):
                    await closed_with(ws, 1001)
            assert await process.wait() == 0
            assert process.stdout is not None
            assert await read_line(process.stdout) == "stopped\n"


async def closed_with(ws: WebSocketConnection, code: int) -> None:
    with pytest.raises(ConnectionClosed) as caught:
        await ws.get_message()
    assert caught.value.reason is not None
    assert caught.value.reason.code == code


async def test_a_killed_worker_is_restarted(tmp_path: Path) -> None:
    async with supervisor(tmp_path) as (process, port, log):
        with trio.fail_after(TIMEOUT):
            pids = await workers_seen(port)
            os.kill(pids[1], signal.SIGKILL)
            # Connections keep being served meanwhile, by one worker or the other.
            while True:
                index, pid = await ask(port)
                if index == 1 and pid != pids[1]:
                    break
                await trio.sleep(0.05)
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 0
        warning = f"worker 1 (pid {pids[1]}) exited with status -9; restarting it"
        assert warning in log.read_text()


async def test_sighup_restarts_workers_without_refusing_a_connection(
    tmp_path: Path,
) -> None:
    failures: list[BaseException] = []
    going_away = 0
    answered: set[tuple[int, int]] = set()

    async def keep_connecting(
        done: trio.Event, replaced: trio.Event, port: int, old: dict[int, int]
    ) -> None:
        nonlocal going_away
        while not done.is_set():
            try:
                answered.add(await ask(port))
                if {index for index, pid in answered if pid not in old.values()} == {
                    0,
                    1,
                }:
                    replaced.set()
            except ConnectionClosed as exc:
                # Connected to a worker that was just told to stop: it closes
                # with 1001 (None: the closing handshake had begun).
                if exc.reason is not None and exc.reason.code != 1001:
                    failures.append(exc)  # pragma: no cover
                going_away += 1
            except Exception as exc:  # pragma: no cover - what this test is about
                failures.append(exc)

    async with supervisor(tmp_path) as (process, port, _):
        with trio.fail_after(TIMEOUT):
            old = await workers_seen(port)
            done, replaced = trio.Event(), trio.Event()
            async with trio.open_nursery() as nursery:
                for _ in range(2):
                    nursery.start_soon(keep_connecting, done, replaced, port, old)
                await trio.sleep(0.2)
                process.send_signal(signal.SIGHUP)
                await replaced.wait()
                await trio.sleep(1)  # the last old worker stops meanwhile
                done.set()
            new = {index: pid for index, pid in answered if pid not in old.values()}
            assert sorted(new) == [0, 1], (old, answered)
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    assert failures == [], failures


# -- trio-websocket serve --workers N --------------------------------------------------


async def test_cli_serves_with_workers_and_stops_with_status_0(
    tls_files: list[str], client_ssl_context: ssl.SSLContext
) -> None:
    process = await trio.lowlevel.open_process(
        [
            *CLI,
            "serve",
            "--port",
            "0",
            "--workers",
            "2",
            *tls_files,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        with trio.fail_after(TIMEOUT):
            banner = await read_line(process.stdout)
            match = re.search(r"wss://127\.0\.0\.1:\d+/", banner)
            assert match, banner
            assert "with 2 workers" in banner
            async with open_websocket_url(match.group(), client_ssl_context) as ws:
                await ws.send_message("hello")
                assert await ws.get_message() == "hello"
                process.send_signal(signal.SIGINT)
                await closed_with(ws, 1001)
            assert await process.wait() == 0
    finally:
        if process.returncode is None:  # pragma: no cover
            process.kill()
            await process.wait()


@pytest.fixture
def tls_files(tmp_path: Path, ca: object) -> list[str]:
    import trustme

    assert isinstance(ca, trustme.CA)
    certificate = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    certificate.cert_chain_pems[0].write_to_path(str(cert))
    certificate.private_key_pem.write_to_path(str(key))
    return ["--tls-cert", str(cert), "--tls-key", str(key)]


def test_cli_refuses_broadcast_with_workers(capsys: pytest.CaptureFixture[str]) -> None:
    from trio_websocket.cli import run

    assert run(["serve", "--broadcast", "--workers", "2"]) == 2
    assert "--broadcast cannot be combined with --workers" in capsys.readouterr().err
    assert run(["serve", "--workers", "0"]) == 2


def test_cli_reports_a_port_in_use_before_starting_workers() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*CLI, "serve", "--port", str(port), "--workers", "2"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    assert result.returncode == 1, result.stderr
    message = f"cannot listen on 127.0.0.1 port {port}: Address already in use"
    assert result.stderr == f"error: {message}\n"
