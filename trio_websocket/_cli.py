"""The ``trio-websocket`` command line: argument parsing and dispatch.

``trio-websocket connect URL`` is an interactive client (see
:mod:`trio_websocket._cli_client`), ``trio-websocket serve`` an echo or chat
server with a browser demo page (see :mod:`trio_websocket._cli_server`).

Exit status: 0 after a normal close, 1 after an error or an abnormal close
(including a server that cannot listen: port taken, host not resolved),
2 for usage errors (bad options, a URL that is not ``ws://`` or ``wss://``),
130 when interrupted with Ctrl-C outside the interactive prompt.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import socket
import sys
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import trio

from ._version import __version__

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A problem with the command line, reported with exit status 2."""


def _seconds(text: str) -> float:
    """A non-negative number of seconds; ``inf`` means no limit."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if math.isnan(value) or value < 0:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
    return value


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of workers: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a number of workers: {text!r}")
    return value


@dataclass(frozen=True)
class RedisAddress:
    """Where ``--pubsub redis://[:PASSWORD@]HOST[:PORT]`` says Redis is."""

    host: str
    port: int = 6379
    password: str | None = None

    def __str__(self) -> str:  # never shows the password
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{host}:{self.port}"


def redis_url(text: str) -> RedisAddress:
    """Parse a ``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`` URL.

    Only the ``default`` user (or none) is supported, and the database
    number is ignored: Redis channels are shared by every database.
    """
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid Redis URL {text!r}: {exc}") from None
    if parts.scheme != "redis":
        raise argparse.ArgumentTypeError(
            f"the pub/sub URL must be redis://HOST[:PORT], not {text!r}"
        )
    if not parts.hostname:
        raise argparse.ArgumentTypeError(f"no host in the Redis URL {text!r}")
    if parts.username not in (None, "", "default"):
        raise argparse.ArgumentTypeError(
            "only a password is supported in the Redis URL "
            "(redis://:PASSWORD@HOST), not a user name"
        )
    if parts.path.strip("/") and not parts.path.strip("/").isdigit():
        raise argparse.ArgumentTypeError(f"invalid Redis URL {text!r}")
    password = parts.password
    if password is not None:
        password = urllib.parse.unquote(password)
    return RedisAddress(parts.hostname, 6379 if port is None else port, password)


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip() or name != name.strip():
        raise argparse.ArgumentTypeError(
            f"a header is 'Name: value', not {text!r}"
        ) from None
    return name, value.strip()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``trio-websocket`` command."""
    parser = argparse.ArgumentParser(
        prog="trio-websocket",
        description="WebSocket client and server for the command line.",
        epilog="Exit status: 0 on a normal close (1000, 1001 or no code), "
        "1 on an error or an abnormal close (serve: an address it cannot "
        "listen on), 2 on a usage error, 130 when interrupted.",
    )
    parser.add_argument(
        "--version", action="version", version=f"trio-websocket {__version__}"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_connect(commands)
    _add_serve(commands)
    return parser


def _add_connect(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    connect = commands.add_parser(
        "connect",
        help="talk to a WebSocket server",
        description="Connect to a WebSocket server. On a terminal: type a line "
        "to send it as a text message; received messages are shown as they "
        "arrive ('<' text, '< [binary N bytes] hex'; '#' notes). Commands: "
        "/ping [text], /close [code [reason]], /help; start a line with '//' to "
        "send a text that begins with '/'. Ctrl-D or Ctrl-C closes. Piped: each "
        "stdin line is sent as a text message and each received message is "
        "written to stdout followed by a newline: text as is, binary as "
        "hexadecimal. At the end of stdin the client waits until the server "
        "has answered a ping and then been quiet for --wait seconds, and "
        "closes with code 1000.",
    )
    connect.add_argument("url", help="ws:// or wss:// URL")
    connect.add_argument(
        "-H",
        "--header",
        dest="headers",
        action="append",
        type=_header,
        default=[],
        metavar="'NAME: VALUE'",
        help="add a header to the handshake request (repeatable)",
    )
    connect.add_argument(
        "-s",
        "--subprotocol",
        dest="subprotocols",
        action="append",
        default=[],
        metavar="NAME",
        help="offer a subprotocol (repeatable, in order of preference)",
    )
    connect.add_argument("--cafile", help="trust the CA certificates in this file")
    connect.add_argument(
        "-k",
        "--insecure",
        action="store_true",
        help="do not verify the server's TLS certificate",
    )
    connect.add_argument(
        "--no-compression",
        dest="compression",
        action="store_false",
        help="do not offer permessage-deflate compression",
    )
    connect.add_argument(
        "--ping-interval",
        type=_positive_seconds,
        metavar="SECONDS",
        help="send a ping every SECONDS; close (status 1) if its pong "
        "does not come back before the next one is due",
    )
    connect.add_argument(
        "--proxy",
        metavar="URL",
        help="connect through this proxy (http://, socks5:// or socks5h://); "
        "'' for none (default: from http_proxy, https_proxy, all_proxy, no_proxy)",
    )
    connect.add_argument(
        "--connect-timeout",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="give up connecting after SECONDS (default: 10)",
    )
    connect.add_argument(
        "--wait",
        type=_seconds,
        default=0.5,
        metavar="SECONDS",
        help="piped mode: after the end of input, wait until the server has "
        "been quiet this long before closing (default: 0.5)",
    )


def _add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser(
        "serve",
        help="run an echo server or a chat room",
        description="Serve WebSocket clients: echo every message back, or with "
        "--broadcast send every message to every connected client (including "
        "its sender). A client that falls more than 64 messages behind is "
        "disconnected with code 1008 (1013 with --pubsub), so a slow client "
        "never holds up the others. A browser asking for / gets a chat page "
        "that talks to this server. The first subprotocol a client offers is accepted.",
    )
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; '' for every interface (default: 127.0.0.1)",
    )
    serve.add_argument(
        "--port",
        type=_port,
        default=8000,
        help="port to listen on; 0 picks a free one (default: 8000)",
    )
    serve.add_argument(
        "--broadcast",
        action="store_true",
        help="a chat room: send every message to every client",
    )
    serve.add_argument(
        "--pubsub",
        type=redis_url,
        metavar="redis://[:PASSWORD@]HOST[:PORT]",
        help="with --broadcast: relay the chat through this Redis server, so "
        "that every worker (and every server using the same Redis) is one "
        "chat room; needed with --workers",
    )
    serve.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this cert")
    serve.add_argument(
        "--tls-key", metavar="FILE", help="the certificate's private key file"
    )
    serve.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N",
        help="serve from N processes sharing the port (Linux, SO_REUSEPORT); "
        "SIGHUP restarts them one at a time, SIGINT or SIGTERM stops them "
        "gracefully, exit status 0 (default: 1, a single process)",
    )


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version or a usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        if args.command == "connect":
            from ._cli_client import connect_command

            return connect_command(args)
        from ._cli_server import serve_command

        return serve_command(args)
    except UsageError as exc:
        report_error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def run_trio(main: Callable[..., Awaitable[int]], *args: object) -> int:
    """``trio.run(main, *args)``, with Ctrl-C ending it quietly with status 130.

    Exceptions from ``main`` propagate as themselves, never in a group.
    """

    async def interruptible() -> int:
        status = EXIT_INTERRUPTED
        error: Exception | None = None
        with trio.open_signal_receiver(signal.SIGINT) as interrupts:
            async with trio.open_nursery() as nursery:

                async def work() -> None:
                    nonlocal status, error
                    try:
                        status = await main(*args)
                    except Exception as exc:
                        error = exc
                    nursery.cancel_scope.cancel()

                async def watch() -> None:
                    async for _ in interrupts:
                        nursery.cancel_scope.cancel()

                nursery.start_soon(work)
                nursery.start_soon(watch)
        if error is not None:
            raise error
        return status

    return trio.run(interruptible)


def os_error_message(exc: OSError) -> str:
    """The operating system's own words for ``exc``, e.g. "Connection refused".

    Name lookups fail with resolver codes, not errno values (``os.strerror``
    would say "Unknown error -2"): their own message is used instead.
    """
    if isinstance(exc, (socket.gaierror, socket.herror)):
        return exc.strerror or str(exc)
    if exc.errno is not None and exc.errno > 0:
        return os.strerror(exc.errno)
    return exc.strerror or str(exc)


def report_error(message: str) -> None:
    """Print one ``error: ...`` line to stderr."""
    print(f"error: {message}", file=sys.stderr, flush=True)


__all__ = [
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_USAGE",
    "RedisAddress",
    "UsageError",
    "build_parser",
    "os_error_message",
    "redis_url",
    "report_error",
    "run",
]
