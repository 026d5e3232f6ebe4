"""The ``trio-websocket`` command, driven as a user drives it.

The client runs as a subprocess with pipes (as in a shell script) or on a
pseudo-terminal (as a person at a prompt), against real servers on
127.0.0.1; ``trio-websocket serve`` runs as a subprocess and is talked to
with the library.
"""

from __future__ import annotations

import errno
import inspect
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import termios
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
import trustme
from conftest import server_url
from websockets.server import ServerProtocol

from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    __version__,
    open_websocket_url,
    serve_websocket,
    wrap_client_stream,
    wrap_server_stream,
)
from trio_websocket.cli import run
from trio_websocket.cli._server import ChatRoom

CLI = (sys.executable, "-m", "trio_websocket")
#: The environment without proxy settings, so that loopback stays direct.
ENV = {name: value for name, value in os.environ.items() if "proxy" not in name.lower()}
#: Whether the library has a ``proxy`` parameter yet.
PROXIES = "proxy" in inspect.signature(open_websocket_url).parameters
#: Upper bound for any one subprocess, so that a bug fails instead of hanging.
TIMEOUT = 15


@dataclass
class Result:
    status: int
    stdout: str
    stderr: str


async def run_cli(*args: str, stdin: bytes | None = b"") -> Result:
    """Run the command to its end; ``stdin=None`` gives it a pipe left open."""
    keep_open = os.pipe() if stdin is None else None
    try:
        with trio.fail_after(TIMEOUT):
            process = await trio.run_process(
                [*CLI, *args],
                stdin=stdin if keep_open is None else keep_open[0],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env=ENV,
            )
    finally:
        for fd in keep_open or ():
            os.close(fd)
    return Result(process.returncode, process.stdout.decode(), process.stderr.decode())


def assert_one_error_line(result: Result, status: int, fragment: str) -> None:
    """The failure was reported as exactly one ``error:`` line."""
    assert result.status == status, result
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: ")
    assert fragment in result.stderr


Handler = Callable[[WebSocketRequest], Awaitable[None]]


async def start_server(nursery: trio.Nursery, handler: Handler) -> str:
    """Serve ``handler`` on a free loopback port; return the URL."""
    server: WebSocketServer = await nursery.start(
        serve_websocket, handler, "127.0.0.1", 0, None
    )
    return server_url(server)


# -- Piped mode --------------------------------------------------------------


async def test_piped_lines_round_trip(echo_url: str) -> None:
    result = await run_cli("connect", echo_url, stdin="hi\nthere\n\nété\n".encode())
    assert result == Result(0, "hi\nthere\n\nété\n", "")


async def test_piped_binary_printed_as_hex(nursery: trio.Nursery) -> None:
    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message(b"\x00\x01\xfe")
        await ws.send_message("text")

    url = await start_server(nursery, handler)
    result = await run_cli("connect", url, stdin=None)
    assert result == Result(0, "0001fe\ntext\n", "")


@pytest.mark.parametrize(
    ("code", "status"), [(1000, 0), (1001, 0), (1011, 1), (4000, 1)]
)
async def test_exit_status_follows_close_code(
    nursery: trio.Nursery, code: int, status: int
) -> None:
    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.aclose(code, "bye")

    url = await start_server(nursery, handler)
    result = await run_cli("connect", url, stdin=None)
    assert result.status == status
    if status:
        assert_one_error_line(result, 1, f"connection closed: {code} ")
    else:
        assert result.stderr == ""


async def test_headers_and_subprotocols_reach_server(nursery: trio.Nursery) -> None:
    seen: list[WebSocketRequest] = []

    async def handler(request: WebSocketRequest) -> None:
        seen.append(request)
        ws = await request.accept(subprotocol="beta")
        await ws.send_message(f"subprotocol {ws.subprotocol}")

    url = await start_server(nursery, handler)
    args = ("-H", "X-Token: s3cret", "-s", "alpha", "--subprotocol", "beta")
    result = await run_cli("connect", *args, url, stdin=None)
    assert result == Result(0, "subprotocol beta\n", "")
    [request] = seen
    assert (b"x-token", b"s3cret") in request.headers
    assert request.proposed_subprotocols == ("alpha", "beta")


@pytest.mark.parametrize("compression", [True, False])
async def test_no_compression(nursery: trio.Nursery, compression: bool) -> None:
    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        offered = dict(request.headers).get(b"sec-websocket-extensions", b"")
        await ws.send_message(f"offered: {offered.decode()}")

    url = await start_server(nursery, handler)
    args = () if compression else ("--no-compression",)
    result = await run_cli("connect", *args, url, stdin=None)
    assert result.status == 0
    assert ("permessage-deflate" in result.stdout) == compression


@pytest.mark.parametrize("trust", ["cafile", "insecure"])
async def test_tls(
    tls_echo_server: WebSocketServer, ca: trustme.CA, tmp_path: Path, trust: str
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    args = ("--cafile", str(ca_file)) if trust == "cafile" else ("--insecure",)
    result = await run_cli("connect", *args, server_url(tls_echo_server), stdin=b"ok\n")
    assert result == Result(0, "ok\n", "")


async def test_keepalive_gives_up_on_a_silent_server(nursery: trio.Nursery) -> None:
    async def deaf(stream: trio.SocketStream) -> None:
        """Complete the handshake, then never read again: no pong ever."""
        protocol = ServerProtocol()
        while not (events := protocol.events_received()):
            protocol.receive_data(await stream.receive_some())
        protocol.send_response(protocol.accept(events[0]))  # type: ignore[arg-type]
        await stream.send_all(b"".join(protocol.data_to_send()))
        await trio.sleep_forever()

    [listener] = await nursery.start(partial(trio.serve_tcp, deaf, 0, host="127.0.0.1"))
    port = listener.socket.getsockname()[1]
    url = f"ws://127.0.0.1:{port}/"
    result = await run_cli("connect", "--ping-interval", "0.05", url, stdin=None)
    assert_one_error_line(result, 1, "no pong within 0.05 s")


# -- Errors ------------------------------------------------------------------


async def silent(stream: trio.SocketStream) -> None:
    """A TCP server that never answers."""
    await trio.sleep_forever()


@pytest.fixture(
    params=[
        "refused",
        "proxy-refused",
        "rejected",
        "tls",
        "timeout",
        "bad-url",
        "bad-proxy",
    ]
)
async def failing_target(
    request: pytest.FixtureRequest,
    nursery: trio.Nursery,
    tls_echo_server: WebSocketServer,
) -> tuple[list[str], int, str]:
    """Command arguments that fail, the exit status, and the error's gist."""
    kind: str = request.param
    if kind.endswith("refused"):
        if kind.startswith("proxy") and not PROXIES:
            pytest.skip("the library has no proxy support")
        with socket.socket() as sock:  # a port nobody listens on any more
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        url = f"ws://127.0.0.1:{port}/"
        if kind == "refused":
            return [url], 1, f"cannot connect to {url}: Connection refused"
        proxy = f"http://127.0.0.1:{port}"
        message = f"cannot connect to proxy {proxy}: Connection refused"
        return ["--proxy", proxy, server_url(tls_echo_server)], 1, message
    if kind == "rejected":

        async def reject(request: WebSocketRequest) -> None:
            await request.reject(403)

        return [await start_server(nursery, reject)], 1, "HTTP 403 Forbidden"
    if kind == "tls":  # the test CA is not trusted
        return [server_url(tls_echo_server)], 1, "TLS handshake with wss://"
    if kind == "timeout":
        listeners = await nursery.start(
            partial(trio.serve_tcp, silent, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        url = f"ws://127.0.0.1:{port}/"
        return ["--connect-timeout", "0.1", url], 1, "timed out connecting"
    if kind == "bad-url":
        return ["http://127.0.0.1/"], 2, "invalid URL 'http://127.0.0.1/'"
    if not PROXIES:
        pytest.skip("the library has no proxy support")
    args = ["--proxy", "ftp://127.0.0.1", "ws://127.0.0.1/"]
    return args, 2, "proxy URL scheme must be http, socks5 or socks5h, not 'ftp'"


async def test_errors_are_one_line(failing_target: tuple[list[str], int, str]) -> None:
    args, status, fragment = failing_target
    result = await run_cli("connect", *args)
    assert_one_error_line(result, status, fragment)
    assert result.stdout == ""


USAGE_ERRORS = [
    (["connect"], "the following arguments are required: url"),
    (["connect", "-H", "no colon", "ws://h/"], "a header is 'Name: value'"),
    (["connect", "-H", "Upgrade: no", "ws://h/"], "handshake header Upgrade"),
    (["connect", "--connect-timeout", "-1", "ws://h/"], "not a number of seconds"),
    (["serve", "--tls-cert", "cert.pem"], "--tls-cert and --tls-key go together"),
    (["serve", "--port", "70000"], "not a port number"),
]
if not PROXIES:
    USAGE_ERRORS.append(
        (["connect", "--proxy", "http://p:3128", "ws://h/"], "proxies are not")
    )


@pytest.mark.parametrize(("argv", "message"), USAGE_ERRORS)
def test_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The header check happens when connecting; "h" must not be looked up
    # first, so that case relies on the library refusing before any I/O.
    assert run(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expected"), [(["--help"], "connect"), (["--version"], __version__)]
)
def test_help_and_version(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(argv) == 0
    assert expected in capsys.readouterr().out


# -- The server --------------------------------------------------------------


@asynccontextmanager
async def cli_server(*args: str) -> AsyncIterator[tuple[trio.Process, str]]:
    """Run ``trio-websocket serve --port 0 ARGS``; yield it and its URL."""
    command = [*CLI, "serve", "--port", "0", *args]
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        with trio.fail_after(TIMEOUT):
            banner = await read_until(process.stdout, b"\n")
        match = re.search(r"wss?://127\.0\.0\.1:\d+/", banner)
        assert match, banner
        yield process, match.group()
    finally:
        if process.returncode is None:
            process.kill()
        with trio.fail_after(TIMEOUT):
            await process.wait()


async def read_until(stream: trio.abc.ReceiveStream, end: bytes) -> str:
    """Read ``stream`` up to and including ``end`` (or its end)."""
    data = b""
    while end not in data:
        chunk = await stream.receive_some()
        if not chunk:
            break
        data += chunk
    return data.decode()


async def stop_with_ctrl_c(process: trio.Process) -> str:
    """Interrupt the server as Ctrl-C would; return everything it logged."""
    assert process.stderr is not None
    process.send_signal(signal.SIGINT)
    with trio.fail_after(TIMEOUT):
        log = await read_until(process.stderr, b"\0")
        assert await process.wait() == 130
    return log


@pytest.fixture
def tls_files(ca: trustme.CA, tmp_path: Path) -> list[str]:
    """``--tls-cert`` and ``--tls-key`` options for a certificate of the test CA."""
    certificate = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    certificate.cert_chain_pems[0].write_to_path(str(cert))
    certificate.private_key_pem.write_to_path(str(key))
    return ["--tls-cert", str(cert), "--tls-key", str(key)]


@pytest.mark.parametrize("tls", [False, True])
async def test_serve_echoes_and_logs(
    tls: bool, tls_files: list[str], client_ssl_context: ssl.SSLContext
) -> None:
    async with cli_server(*(tls_files if tls else [])) as (process, url):
        assert url.startswith("wss://" if tls else "ws://")
        context = client_ssl_context if tls else None
        async with (
            open_websocket_url(url, context) as first,
            open_websocket_url(url, context) as second,
        ):
            await first.send_message("one")
            assert await first.get_message() == "one"
            await second.send_message(b"two")
            assert await second.get_message() == b"two"  # not "one": an echo
        log = await stop_with_ctrl_c(process)
    assert "Traceback" not in log
    assert re.search(r"server-\d+: 127\.0\.0\.1:\d+ connected to /", log), log
    assert "closed 1000 NORMAL_CLOSURE" in log


@pytest.mark.parametrize("mode", [[], ["--broadcast"]], ids=["echo", "broadcast"])
async def test_serve_logs_each_event_once(mode: list[str]) -> None:
    async with cli_server(*mode) as (process, url):
        assert process.stderr is not None
        async with open_websocket_url(url) as client:
            await client.send_message("hello")
            assert await client.get_message() == "hello"
            await client.aclose(1000, "bye")
        with trio.fail_after(TIMEOUT):
            log = await read_until(process.stderr, b"(bye)\n")
        log += await stop_with_ctrl_c(process)
    lines = log.splitlines()
    assert len(lines) == 2, log
    opened, closed = lines
    assert re.fullmatch(r"\S+ (server-\d+): 127\.0\.0\.1:\d+ connected to /", opened)
    name = opened.split()[1]
    assert closed.endswith(f" {name} closed 1000 NORMAL_CLOSURE (bye)"), log


async def test_serve_reports_a_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await run_cli("serve", "--port", str(port))
    message = f"cannot listen on 127.0.0.1 port {port}: {os.strerror(errno.EADDRINUSE)}"
    assert_one_error_line(result, 1, message)
    assert result.stdout == ""


def resolver_message(host: str) -> str:
    """What the system's resolver says about a host that does not resolve."""
    with pytest.raises(socket.gaierror) as failure:
        socket.getaddrinfo(host, 80)
    assert failure.value.strerror
    return failure.value.strerror


UNRESOLVABLE = "no-such-host.invalid"  # RFC 2606: never resolves


async def test_serve_reports_a_host_that_does_not_resolve() -> None:
    result = await run_cli("serve", "--host", UNRESOLVABLE, "--port", "0")
    message = (
        f"cannot listen on {UNRESOLVABLE} port 0: {resolver_message(UNRESOLVABLE)}"
    )
    assert_one_error_line(result, 1, message)
    assert "Unknown error" not in result.stderr
    assert result.stdout == ""


async def test_connect_reports_a_host_that_does_not_resolve() -> None:
    url = f"ws://{UNRESOLVABLE}/"
    result = await run_cli("connect", url)
    message = f"cannot connect to {url}: {resolver_message(UNRESOLVABLE)}"
    assert_one_error_line(result, 1, message)
    assert "Unknown error" not in result.stderr
    assert result.stdout == ""


async def test_serve_broadcast_reaches_everyone() -> None:
    async with (
        cli_server("--broadcast") as (_, url),
        open_websocket_url(url) as alice,
        open_websocket_url(url) as bob,
    ):
        with trio.fail_after(TIMEOUT):
            await bob.send_message("bob is here")
            assert await alice.get_message() == "bob is here"  # bob has joined
            await alice.send_message("hello room")
            assert await alice.get_message() == "hello room"
            assert [await bob.get_message() for _ in range(2)] == [
                "bob is here",
                "hello room",
            ]


async def http_get(url: str, path: str) -> tuple[str, str]:
    """A browser's plain GET: the status line and headers, and the body."""
    port = int(url.rsplit(":", 1)[1].strip("/"))
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
        )
        response = await read_until(stream, b"\0")  # to the end of the stream
    head, _, body = response.partition("\r\n\r\n")
    return head, body


async def test_serve_answers_browsers_with_the_chat_page() -> None:
    async with cli_server() as (_, url):
        with trio.fail_after(TIMEOUT):
            head, body = await http_get(url, "/")
            missing, _ = await http_get(url, "/favicon.ico")
    assert head.startswith("HTTP/1.1 200 ")
    assert "content-type: text/html; charset=utf-8" in head.lower()
    assert body.startswith("<!doctype html>") and "new WebSocket(" in body
    assert not re.search(r"""(src|href)=["']?https?:""", body)  # self-contained
    assert missing.startswith("HTTP/1.1 404 ")


async def test_chat_room_disconnects_a_client_that_falls_behind() -> None:
    """A client that stops reading is dropped; the others keep getting messages."""
    room = ChatRoom(outbox_size=1)

    async def member(nursery: trio.Nursery) -> WebSocketConnection:
        client_stream, server_stream = trio.testing.lockstep_stream_pair()

        async def serve() -> None:
            request = await wrap_server_stream(nursery, server_stream)
            await room.join(await request.accept())

        nursery.start_soon(serve)
        return await wrap_client_stream(nursery, client_stream, "chat", "/")

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            slow, fast = await member(nursery), await member(nursery)
            for number in range(5):  # lockstep streams have no buffers to fill
                await fast.send_message(f"message {number}")
                assert await fast.get_message() == f"message {number}"
            with pytest.raises(ConnectionClosed):
                while True:  # what it had received, then its connection is gone
                    await slow.get_message()
            await fast.send_message("still here")
            assert await fast.get_message() == "still here"
            nursery.cancel_scope.cancel()


# -- Interactive mode on a pseudo-terminal -----------------------------------


class Terminal:
    """The user's side of a pseudo-terminal: type keys, wait for output."""

    def __init__(self, master: trio.lowlevel.FdStream) -> None:
        self._master = master
        self.screen = ""  # everything shown so far
        self._seen = 0  # how far expect() has matched

    async def type(self, keys: str) -> None:
        await self._master.send_all(keys.encode())

    async def expect(self, text: str) -> None:
        """Wait until ``text`` is shown after what was expected before."""
        with trio.move_on_after(TIMEOUT):
            while (found := self.screen.find(text, self._seen)) < 0:
                try:
                    chunk = await self._master.receive_some()
                except trio.BrokenResourceError:  # EIO: the program is gone
                    chunk = b""
                assert chunk, f"{text!r} never shown in {self.screen!r}"
                self.screen += chunk.decode(errors="replace")
        assert found >= 0, f"{text!r} not shown in time in {self.screen!r}"
        self._seen = found + len(text)


@asynccontextmanager
async def terminal_client(
    url: str,
) -> AsyncIterator[tuple[Terminal, trio.Process, int]]:
    """``trio-websocket connect URL`` on a pseudo-terminal."""
    master, slave = os.openpty()
    process = await trio.lowlevel.open_process(
        [*CLI, "connect", url], stdin=slave, stdout=slave, stderr=slave, env=ENV
    )
    try:
        async with trio.lowlevel.FdStream(master) as stream:
            yield Terminal(stream), process, slave
    finally:
        if process.returncode is None:
            process.kill()
        with trio.fail_after(TIMEOUT):
            await process.wait()
        os.close(slave)


async def test_interactive_session(nursery: trio.Nursery) -> None:
    pushes, to_push = trio.open_memory_channel[str | bytes](1)

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        async with trio.open_nursery() as tasks:
            tasks.start_soon(echo_until_closed, ws, tasks.cancel_scope)
            async for message in to_push:  # what the test makes the server say
                await ws.send_message(message)

    url = await start_server(nursery, handler)
    async with terminal_client(url) as (terminal, process, slave):
        await terminal.expect(f"# connected to {url}, extensions permessage-deflate")
        await terminal.expect(" (/help for help)\r\n> ")
        await terminal.type("hello\r")
        await terminal.expect("hello\r\n> \r\x1b[K< hello\r\n> ")
        await terminal.type("/ping\r")
        await terminal.expect("# pong after ")
        await terminal.type("drafx\x7ft")  # a typo, rubbed out
        await terminal.expect("\r\x1b[K> draft")
        await pushes.send("news")  # arrives while a line is half typed...
        await terminal.expect("\r\x1b[K< news\r\n> draft")  # ...which survives
        await pushes.send(b"\x00\x01\xfe")
        await terminal.expect("\r\x1b[K< [binary 3 bytes] 0001fe\r\n> draft")
        await terminal.type("\x15\x04")  # Ctrl-U clears the line, Ctrl-D quits
        await terminal.expect("# connection closed: 1000 NORMAL_CLOSURE")
        with trio.fail_after(TIMEOUT):
            assert await process.wait() == 0
        assert termios.tcgetattr(slave)[3] & termios.ICANON  # the mode is restored
    assert "Traceback" not in terminal.screen


async def echo_until_closed(ws: WebSocketConnection, done: trio.CancelScope) -> None:
    try:
        while True:
            await ws.send_message(await ws.get_message())
    except ConnectionClosed:
        done.cancel()
