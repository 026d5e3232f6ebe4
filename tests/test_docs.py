"""The documentation's code runs, and the Sphinx site builds without warnings.

Every example in ``docs/examples`` is imported and its ``main()`` run against
real loopback servers; each result is checked against what the docs claim.
Examples that wait out timeouts run on Trio's virtual clock.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio
import trustme

import trio_websocket
from trio_websocket import CloseReason, ConnectionStats, Endpoint

DOCS = Path(__file__).resolve().parent.parent / "docs"
EXAMPLES = DOCS / "examples"
#: Example modules that are helpers for the others, without a ``main()``.
HELPERS = {"peers"}
#: The documented build command, with a quick builder.
SPHINX = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "dummy"]
#: Virtual seconds any example may take before it counts as hung.
HANG_GUARD = 120


def load(name: str) -> ModuleType:
    """Import ``docs/examples/<name>.py`` the way ``python <file>`` would."""
    spec = importlib.util.spec_from_file_location(
        f"docs_{name}", EXAMPLES / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def examples_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Examples import their helpers as siblings, as when run as scripts."""
    monkeypatch.syspath_prepend(str(EXAMPLES))


def upload_answer() -> str:
    data = b"".join(bytes([n]) * 64 * 1024 for n in range(32))
    return f"{len(data)} {hashlib.sha256(data).hexdigest()}"


def check_servers(result: Any) -> None:
    reply, (listeners, unix_reply), outcomes, statuses = result
    assert reply == "ping?"
    assert isinstance(listeners[0], Endpoint) and listeners[0].port > 0
    assert isinstance(listeners[1], str) and listeners[1].endswith("ws.sock")
    assert unix_reply == "over a Unix socket"
    assert outcomes == [1011, "still serving?"]
    assert statuses == [b"HTTP/1.1 200 OK", b"HTTP/1.1 404 Not Found"]


def check_compression(result: Any) -> None:
    negotiated, ratio, code = result
    assert negotiated == (["permessage-deflate"], [])
    assert ratio > 2
    assert code == 1009


def check_observability(stats: ConnectionStats) -> None:
    assert (stats.messages_sent, stats.messages_received) == (10, 10)
    assert stats.bytes_sent == 10 * len("status update " * 20)
    assert stats.wire_bytes_sent < stats.bytes_sent
    assert stats.last_ping_rtt is not None
    assert stats.queue_depth == 0


def check_heartbeat(round_trips: list[float]) -> None:
    assert len(round_trips) == 3
    assert all(rtt >= 0 for rtt in round_trips)


def check_server_features(result: Any) -> None:
    status, started, got = result
    assert status == 403
    assert started == 1
    assert got == [
        "welcome to prices",
        "TRIO 101.5",
        f"closed: {CloseReason(1001, 'server shutting down')}",
    ]


def equals(expected: object) -> Callable[[Any], None]:
    def check(result: Any) -> None:
        assert result == expected

    return check


REJECTED = "rejected with HTTP 403: b'no entry'"
HELLOS = ["hello from ada", "hello from bob", "hello from cy"]

#: For each example: whether it needs the virtual clock, and its check.
EXPECTED: dict[str, tuple[bool, Callable[[Any], None]]] = {
    "quickstart": (False, equals("hello, world")),
    "tutorial": (False, equals(["hello", "trio"])),
    "clients": (
        False,
        equals([("chat.v2", "hi"), "hi", "hi", "hi", REJECTED]),
    ),
    "servers": (False, check_servers),
    "timeouts": (
        True,
        equals(
            [
                "the server did not complete the handshake within 5 s",
                "no closing handshake within 2 s: the connection was dropped",
                "gave up after 5 s",
            ]
        ),
    ),
    "backpressure": (
        True,
        equals(
            {
                "message_queue_size=0": 0,
                "message_queue_size=1": 1,
                "message_queue_size=4": 4,
                "message_queue_size=math.inf": 10,
                "message_queue_bytes=2**16": 10,
            }
        ),
    ),
    "compression": (False, check_compression),
    "keepalive": (True, equals(["gave up: 1011 keepalive ping timeout", False, True])),
    "streaming": (False, equals(upload_answer())),
    "iteration": (
        False,
        equals(
            [
                "got ['3', '2', '1']",
                f"failed: {CloseReason(1011, 'something broke')}",
            ]
        ),
    ),
    "stream_adapter": (False, equals(b"HELLO, STREAM")),
    "testing_pair": (False, equals("both tests passed")),
    "observability": (False, check_observability),
    "heartbeat": (True, check_heartbeat),
    "client_features": (
        False,
        equals(
            [
                "/new auth=- origin=-",
                "/new auth=- origin=-",
                "/new auth=Basic YWxpY2U6czNjcmV0 origin=https://app.example.com",
            ]
        ),
    ),
    "server_features": (False, check_server_features),
    "chat_room": (False, equals([HELLOS, HELLOS, HELLOS])),
    "json_messages": (
        False,
        equals([{"id": 1, "sum": 6}, CloseReason(1003, "expected JSON")]),
    ),
    "reverse_proxy": (False, equals("203.0.113.7")),
    "compat012": (False, equals("hello world!")),
    "reconnect": (
        True,
        equals(["(dropped; reconnecting)"] * 2 + ["101.5", "101.7", "101.6"]),
    ),
}


def test_every_example_is_checked() -> None:
    found = {path.stem for path in EXAMPLES.glob("*.py")} - HELPERS
    assert found == set(EXPECTED)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Undo an example's logging setup (a level, a root handler) after it.

    Left at DEBUG, the library's logger would have pytest keep every later
    test's per-frame records, and with them the frames.
    """
    library, root = logging.getLogger("trio-websocket"), logging.getLogger()
    level, handlers = library.level, list(root.handlers)
    yield
    library.setLevel(level)
    root.handlers[:] = handlers


async def run_example(name: str, guard: float) -> None:
    module = load(name)
    with trio.fail_after(guard):
        result = await module.main()
    EXPECTED[name][1](result)


@pytest.mark.parametrize("name", sorted(n for n, (v, _) in EXPECTED.items() if not v))
async def test_example(name: str) -> None:
    await run_example(name, 30)


@pytest.mark.parametrize("name", sorted(n for n, (v, _) in EXPECTED.items() if v))
async def test_example_on_virtual_clock(name: str, autojump_clock: object) -> None:
    await run_example(name, HANG_GUARD)


# -- Parts of examples that need test material: TLS, a closed port --------------------


async def test_tls_client_example(
    tmp_path: Path,
    nursery: trio.Nursery,
    ca: trustme.CA,
    server_ssl_context: ssl.SSLContext,
) -> None:
    clients = load("clients")
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    server = await nursery.start(
        trio_websocket.serve_websocket,
        clients.demo_handler,
        "127.0.0.1",
        0,
        server_ssl_context,
    )
    context = clients.client_tls_context(str(cafile))
    with trio.fail_after(10):
        reply = await clients.over_tls(f"wss://127.0.0.1:{server.port}/", context)
    assert reply == "hi"


async def test_connection_refused_example() -> None:
    clients = load("clients")
    with socket.socket() as probe:  # a port that nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with trio.fail_after(10):
        outcome = await clients.try_to_connect(f"ws://127.0.0.1:{port}/")
    assert outcome.startswith("could not connect")


# -- The command-line transcript of docs/cli.rst ---------------------------------------

PIPED = "$ printf 'hello\\nworld\\n' | trio-websocket connect ws://127.0.0.1:8000/"


async def test_piped_cli_transcript(nursery: trio.Nursery) -> None:
    cli_page = (DOCS / "cli.rst").read_text()
    assert f"{PIPED}\n   hello\n   world\n   $ echo $?\n   0\n" in cli_page
    echo = load("quickstart").echo
    server = await nursery.start(
        trio_websocket.serve_websocket, echo, "127.0.0.1", 0, None
    )
    url = f"ws://127.0.0.1:{server.port}/"
    with trio.fail_after(30):
        process = await trio.run_process(
            [sys.executable, "-m", "trio_websocket", "connect", url],
            stdin=b"hello\nworld\n",
            capture_stdout=True,
            check=False,
        )
    assert (process.returncode, process.stdout) == (0, b"hello\nworld\n")


# -- The Sphinx site -------------------------------------------------------------------


def test_api_reference_covers_every_public_name() -> None:
    api = (DOCS / "api.rst").read_text()
    documented = set(re.findall(r"^\.\. auto\w+:: (\w+)", api, re.MULTILINE))
    assert set(trio_websocket.__all__) <= documented


def test_every_page_is_in_the_toctree() -> None:
    index = (DOCS / "index.rst").read_text()
    pages = {path.stem for path in DOCS.glob("*.rst")} - {"index"}
    listed = set(re.findall(r"^   ([\w-]+)$", index, re.MULTILINE))
    assert pages <= listed


def test_sphinx_build_has_no_warnings(tmp_path: Path) -> None:
    pytest.importorskip("sphinx")
    build = subprocess.run(
        [*SPHINX, str(DOCS), str(tmp_path / "build")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "default"},
    )
    assert build.returncode == 0, build.stdout + build.stderr
    assert "WARNING" not in build.stderr
