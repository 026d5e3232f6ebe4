"""The argument parser of the ``trio-websocket`` command."""

from __future__ import annotations

import argparse
import math
import urllib.parse

from .._version import __version__
from ._common import RedisAddress


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
