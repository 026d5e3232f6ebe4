"""``trio-websocket connect URL``: a client for terminals and shell scripts."""

from __future__ import annotations

import argparse
import contextlib
import http
import inspect
import ssl
import sys
from typing import Any

import trio
from websockets.datastructures import Headers

from .._client import open_websocket_url
from .._connection import WebSocketConnection
from .._errors import (
    CloseReason,
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    DisconnectionTimeout,
    HandshakeError,
)
from .._handshake import add_extra_headers
from .._settings import ConnectionOptions
from .._url import parse_url
from ._common import (
    EXIT_ERROR,
    EXIT_OK,
    UsageError,
    os_error_message,
    report_error,
    run_trio,
)
from ._console import Message, PipeConsole, TtyConsole, terminal_mode

Console = PipeConsole | TtyConsole

#: Close codes that end the command with status 0 (1005: closed without a code).
NORMAL_CLOSE_CODES = frozenset({1000, 1001, 1005})
#: How long the closing handshake may take before we give up on the server.
DISCONNECT_TIMEOUT = 5.0

HELP = (
    "type a line to send it; /ping [text] sends a ping; "
    "/close [code [reason]] closes; //text sends '/text'; Ctrl-D or Ctrl-C quits"
)


def connect_command(args: argparse.Namespace) -> int:
    """Run ``trio-websocket connect`` and return its exit status."""
    try:
        secure = parse_url(args.url).secure
    except ValueError as exc:
        raise UsageError(f"invalid URL {args.url!r}: {exc}") from None
    options = _connect_options(args, secure)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        console: Console = PipeConsole(sys.stdin.fileno(), sys.stdout.buffer)
        return run_trio(_connect_and_talk, args, options, console)
    fd = sys.stdin.fileno()
    tty = TtyConsole(fd, sys.stdout.buffer)
    with terminal_mode(fd):
        try:
            return run_trio(_connect_and_talk, args, options, tty)
        finally:
            tty.finish()


def _connect_options(args: argparse.Namespace, secure: bool) -> dict[str, Any]:
    """Keyword arguments for ``open_websocket_url`` from the options."""
    supported = {
        *inspect.signature(open_websocket_url).parameters,
        *ConnectionOptions.__required_keys__,
        *ConnectionOptions.__optional_keys__,
    }
    try:  # refuse bad headers before connecting, not after
        add_extra_headers(Headers(), args.headers)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    options: dict[str, Any] = {
        "subprotocols": args.subprotocols or None,
        "extra_headers": args.headers or None,
        "connect_timeout": args.connect_timeout,
        "disconnect_timeout": DISCONNECT_TIMEOUT,
        "ssl_context": _ssl_context(args) if secure else None,
    }
    if args.proxy is not None:
        if "proxy" not in supported:
            raise UsageError("proxies are not supported yet")
        options["proxy"] = args.proxy
    if not args.compression and "compression" in supported:
        options["compression"] = None
    return options


def _ssl_context(args: argparse.Namespace) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=args.cafile)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load CA file {args.cafile!r}: {exc}") from None
    if args.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def _connect_and_talk(
    args: argparse.Namespace, options: dict[str, Any], console: Console
) -> int:
    """Connect, then run a session on ``console``; return the exit status."""
    url: str = args.url
    try:
        async with contextlib.AsyncExitStack() as stack:
            try:
                ws = await stack.enter_async_context(open_websocket_url(url, **options))
            except Exception as exc:
                message = _describe_connect_error(exc, url, args)
                if message is None:
                    raise
                report_error(message)
                return EXIT_ERROR
            if isinstance(console, TtyConsole):
                console.note(_describe_connection(ws, url))
            session = Session(ws, console, args.ping_interval, args.wait)
            return await session.run()
    except DisconnectionTimeout:
        report_error("the server did not finish the closing handshake")
        return EXIT_ERROR
    except ValueError as exc:  # e.g. a header the handshake sets itself
        raise UsageError(str(exc)) from None


def _describe_connect_error(
    exc: Exception, url: str, args: argparse.Namespace
) -> str | None:
    """One line saying why connecting failed, or ``None`` for a bug."""
    if isinstance(exc, ConnectionRejected):
        try:
            phrase = " " + http.HTTPStatus(exc.status_code).phrase
        except ValueError:
            phrase = ""
        return f"server rejected the connection: HTTP {exc.status_code}{phrase}"
    if isinstance(exc, ConnectionTimeout):
        return f"timed out connecting to {url} (after {args.connect_timeout:g} s)"
    # A networking error comes bare, or as the cause of a HandshakeError.
    cause = exc.__cause__ if isinstance(exc, HandshakeError) else exc
    if isinstance(cause, ssl.SSLError):
        detail = getattr(cause, "verify_message", None) or cause.reason or cause
        return f"TLS handshake with {url} failed: {detail}"
    if isinstance(cause, OSError):
        target = f"proxy {args.proxy}" if args.proxy else url
        return f"cannot connect to {target}: {_os_error_detail(cause)}"
    if isinstance(exc, HandshakeError):
        return f"WebSocket handshake with {url} failed: {exc}"
    if isinstance(exc, trio.BrokenResourceError):
        return f"connection to {url} lost during the handshake"
    return None


def _os_error_detail(exc: OSError) -> str:
    """Why a connect failed, without the address Trio's messages repeat.

    A connect by host name fails with a group of per-address errors.
    """
    group: object = getattr(exc.__cause__, "exceptions", ())
    if isinstance(group, tuple):
        exc = next((e for e in group if isinstance(e, OSError)), exc)
    return os_error_message(exc)


def _describe_connection(ws: WebSocketConnection, url: str) -> str:
    text = f"connected to {url}"
    if ws.subprotocol:
        text += f", subprotocol {ws.subprotocol}"
    if ws.extensions:  # not from handshake_headers: they omit the handshake's own
        text += f", extensions {', '.join(ws.extensions)}"
    return text + " (/help for help)"


def _describe_close(reason: CloseReason | None) -> str:
    if reason is None:
        return "connection closed"
    text = f"connection closed: {reason.code} {reason.name}"
    return text + (f" ({reason.reason})" if reason.reason else "")


class Session:
    """One connection: send what the console reads, show what arrives."""

    def __init__(
        self,
        ws: WebSocketConnection,
        console: Console,
        ping_interval: float | None,
        wait: float,
    ) -> None:
        self._ws = ws
        self._console = console
        self._ping_interval = ping_interval
        self._wait = wait
        self._quiet = trio.CancelScope()  # see _wait_for_replies
        self._failure: str | None = None

    async def run(self) -> int:
        """Talk until the connection closes; return the exit status."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._receive, nursery.cancel_scope)
            nursery.start_soon(self._send)
            if self._ping_interval is not None:
                nursery.start_soon(self._keepalive, self._ping_interval)
        reason = self._ws.closed
        self._console.note(_describe_close(reason))
        if self._failure is not None:
            report_error(self._failure)
            return EXIT_ERROR
        if reason is not None and reason.code in NORMAL_CLOSE_CODES:
            return EXIT_OK
        if not self._console.interactive:
            report_error(_describe_close(reason))
        return EXIT_ERROR

    async def _receive(self, done: trio.CancelScope) -> None:
        try:
            while True:
                message: Message = await self._ws.get_message()
                self._quiet.deadline = trio.current_time() + self._wait
                self._console.message(message)
        except ConnectionClosed:
            done.cancel()

    async def _send(self) -> None:
        with contextlib.suppress(ConnectionClosed):  # the receiver reports it
            while (line := await self._console.read_line()) is not None:
                if self._console.interactive and line.startswith("/"):
                    if line.startswith("//"):
                        await self._ws.send_message(line[1:])
                    elif await self._command(line):
                        return
                elif line or not self._console.interactive:
                    await self._ws.send_message(line)
            if not self._console.interactive:
                await self._wait_for_replies()
            await self._ws.aclose()

    async def _command(self, line: str) -> bool:
        """Run a ``/command``; return whether the connection is closing."""
        name, _, rest = line.partition(" ")
        if name == "/ping":
            self._nursery.start_soon(self._ping, rest.encode() if rest else None)
        elif name == "/close":
            code, _, reason = rest.strip().partition(" ")
            try:
                await self._ws.aclose(int(code or 1000), reason or None)
            except ValueError as exc:
                self._console.note(f"cannot close like that: {exc}")
                return False
            return True
        else:
            self._console.note(HELP if name == "/help" else f"unknown command {name}")
        return False

    async def _ping(self, payload: bytes | None) -> None:
        started = trio.current_time()
        self._console.note("ping" + (f" {payload.decode()}" if payload else ""))
        try:
            await self._ws.ping(payload)
        except ValueError as exc:
            self._console.note(f"cannot ping: {exc}")
            return
        elapsed = (trio.current_time() - started) * 1000
        self._console.note(f"pong after {elapsed:.1f} ms")

    async def _wait_for_replies(self) -> None:
        """After the end of input: a ping round trip, then quiet for a while."""
        with trio.move_on_after(DISCONNECT_TIMEOUT):
            await self._ws.ping()
        # The receiver pushes this deadline back whenever a message arrives.
        self._quiet = trio.CancelScope(deadline=trio.current_time() + self._wait)
        with self._quiet:
            await trio.sleep_forever()

    async def _keepalive(self, interval: float) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await trio.sleep(interval)
                with trio.move_on_after(interval) as waiting:
                    await self._ping(None)
                if waiting.cancelled_caught:
                    self._failure = f"no pong within {interval:g} s"
                    self._console.note(self._failure)
                    with trio.move_on_after(interval):  # a dead peer: abort
                        await self._ws.aclose(1011, "keepalive timeout")
                    return
