"""Floors: the least a WebSocket handshake and an idle connection cost on Trio.

    python benchmarks/floors.py            # about 3 minutes on 2 cores
    python benchmarks/floors.py --quick    # fewer handshakes and repeats

``run.py`` compares this library with other libraries. This script compares
it with the cheapest code that does the same job on the same Trio, to tell
how far a target can be reached at all:

* **Handshakes, server side.** A raw blocking client in another process
  (standard library sockets, so it costs little and the same for every row)
  opens a connection, sends the upgrade request, reads the response, sends a
  close frame and reads until the server closes; one connection at a time.
  Rows: ``plain`` (Trio's ``serve_tcp``; the client only sends EOF, and the
  server closes), ``minimal`` (a hand-written 101 and close reply on plain
  Trio: no validation, no engine, no reader task, no timeouts), ``minimal +
  engine`` (the same, with the engine's ``ServerProtocol`` for the frames,
  which this library keeps per connection), ``+ reader task`` (the close
  frame read by a task of the server's nursery while the handler waits, as
  a handler waits in ``get_message``), this library, and trio-websocket
  0.12.2.
* **Handshakes, client side.** The same exchange against a minimal asyncio
  server in another process. Rows: ``plain`` (``open_tcp_stream``, then EOF
  both ways, as ``run.py``'s plain peer does), ``minimal`` (the exchange on
  a bare Trio socket), ``minimal + nursery + engine + reader task`` (the
  structure ``open_websocket`` has: a nursery around the body, the engine's
  ``ClientProtocol``, and a task reading while the body runs), this
  library, and 0.12.2.
* **Memory per idle connection**, 1,000 open, with ``tracemalloc`` as in
  ``run.py``. Server rows: ``plain`` (a handler waiting in
  ``receive_some``), ``plain + engine`` (the same, holding the engine's
  protocol object opened for frames), this library. Client rows: ``plain``
  (a task holding a stream, waiting on an event), ``+ nursery`` (the same
  inside a nursery of its own, as ``open_websocket`` opens one for the
  connection's reader task), ``+ nursery + engine``, this library.

Rates are handshakes per second of wall time; CPU is the process's user and
system time per handshake (steadier than rates on a shared machine). Each
cell is the median over repeats, rows rotated within a repeat; ratios are
taken per repeat. Results go to ``results/floors.md``.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from harness.envs import AGENTS_DIR, BENCH_DIR, ENVS, ensure

sys.path.insert(0, str(AGENTS_DIR))

from fixed_wire import client_request, server_response

RESULTS = BENCH_DIR / "results" / "floors.md"
CLOSE_FROM_CLIENT = bytes([0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xE8 ^ 2])  # 1000
CLOSE_FROM_SERVER = b"\x88\x02\x03\xe8"
WARM_UP = 200
IDLE_WAIT = 1.0  # longer than a reader's rest delay (0.25 s)
# Opened and closed before memory is measured, so that what the first
# connection imports or caches is not counted as the cost of a connection.
WARM_UP_CONNECTIONS = 50


def upgrade_request(port: int) -> bytes:
    """The fixed peer's upgrade request, without a compression offer."""
    return client_request("127.0.0.1", port, deflate=False)[0]


def upgrade_response(head: bytes) -> bytes:
    """The fixed peer's 101 to a request head (it validates nothing)."""
    return server_response(head, deflate_enabled=False)[0]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- The raw client that drives a server under test ------------------------------


def read_head(sock: socket.socket) -> None:
    """Read the server's response head (and nothing the server sends later)."""
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(4096)
        if not data:
            raise SystemExit("the server closed during the handshake")
        head += data


def drive(port: int, count: int, websocket: bool) -> None:
    """Open and close ``count`` connections one at a time (blocking sockets)."""
    request = upgrade_request(port)
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if websocket:
                sock.sendall(request)
                read_head(sock)
                sock.sendall(CLOSE_FROM_CLIENT)
            else:
                sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):
                pass


def hold(port: int, count: int, websocket: bool) -> None:
    """Open ``count`` connections, say ``ready``, keep them until stdin ends."""
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if websocket:
            sock.sendall(upgrade_request(port))
            read_head(sock)
        socks.append(sock)
    print("ready", flush=True)
    sys.stdin.read()


# -- Servers under test -----------------------------------------------------------


def server_handlers(kind: str, nursery: Any) -> Callable[[Any], Awaitable[None]]:
    """A ``serve_tcp`` handler for the plain and minimal server rows."""
    import trio

    engine_for = _engine_factory() if kind != "minimal" else None

    async def plain(stream: trio.SocketStream) -> None:
        try:
            while await stream.receive_some():
                pass
        finally:
            await stream.aclose()

    async def answer_close(stream: trio.SocketStream, engine: Any) -> None:
        data = await stream.receive_some()
        if engine is None:
            await stream.send_all(CLOSE_FROM_SERVER)
        else:
            engine.receive_data(data)
            engine.events_received()
            await stream.send_all(b"".join(engine.data_to_send()))

    async def reader(stream: trio.SocketStream, engine: Any, done: Any) -> None:
        try:
            await answer_close(stream, engine)
        finally:
            done.set()

    async def minimal(stream: trio.SocketStream) -> None:
        try:
            head = b""
            while b"\r\n\r\n" not in head:
                data = await stream.receive_some()
                if not data:
                    return
                head += data
            await stream.send_all(upgrade_response(head))
            engine = engine_for() if engine_for else None
            if kind == "minimal-reader":  # the handler waits while a task reads
                done = trio.Event()
                nursery.start_soon(reader, stream, engine, done)
                await done.wait()
            else:
                await answer_close(stream, engine)
        finally:
            await stream.aclose()

    return plain if kind == "plain" else minimal


def _engine_factory() -> Callable[[], Any]:
    """The engine's server side opened for frames, as this library opens it."""
    from trio_websocket._engine import open_directly
    from websockets.server import ServerProtocol

    def make() -> Any:
        engine = ServerProtocol()
        open_directly(engine, [], None)
        return engine

    return make


async def start_server(kind: str, nursery: Any) -> int:
    """Start the server row ``kind`` in ``nursery``; return its port."""

    if kind in ("ours", "tw012"):
        import trio_websocket as tw

        async def echo(request: Any) -> None:
            ws = await request.accept()
            try:
                while True:
                    await ws.send_message(await ws.get_message())
            except tw.ConnectionClosed:
                pass

        server = await nursery.start(tw.serve_websocket, echo, "127.0.0.1", 0, None)
        return int(server.port)
    return await serve_plain_tcp(server_handlers(kind, nursery), nursery)


async def serve_plain_tcp(
    handler: Callable[[Any], Awaitable[None]], nursery: Any
) -> int:
    """Start Trio's ``serve_tcp`` with ``handler`` on loopback; return the port."""
    import trio

    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
    )
    return int(listeners[0].socket.getsockname()[1])


def measure_server(kind: str, count: int) -> dict[str, float]:
    import trio

    async def main() -> dict[str, float]:
        async with trio.open_nursery() as nursery:
            port = await start_server(kind, nursery)
            mode = "plain" if kind == "plain" else "ws"
            driver = [sys.executable, __file__, "_drive", str(port), mode]
            await trio.run_process([*driver, str(WARM_UP)])
            cpu, start = cpu_seconds(), time.perf_counter()
            await trio.run_process([*driver, str(count)])
            elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu
            nursery.cancel_scope.cancel()
        return {"rate": count / elapsed, "cpu_us": cpu / count * 1e6}

    return trio.run(main)


# -- Clients under test -----------------------------------------------------------


def client_opener(kind: str, port: int) -> Callable[[], Awaitable[None]]:
    """One connection's opening and closing handshake for the client ``kind``."""
    import trio

    if kind in ("ours", "tw012"):
        import trio_websocket as tw

        # 0.12.2 has no compression; ours would offer it by default.
        extra = {"compression": None} if hasattr(tw, "ConnectionOptions") else {}

        async def library() -> None:
            async with tw.open_websocket(
                "127.0.0.1", port, "/", use_ssl=False, **extra
            ):
                pass

        return library

    async def plain() -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        try:
            await stream.send_eof()
            while await stream.receive_some():
                pass
        finally:
            await stream.aclose()

    async def open_upgraded(sock: Any) -> None:
        """Connect, send the upgrade request, read the response's head."""
        await sock.connect(("127.0.0.1", port))
        await sock.send(upgrade_request(port))
        head = b""
        while b"\r\n\r\n" not in head:
            head += await sock.recv(65536)

    async def minimal() -> None:
        with trio.socket.socket() as sock:
            await open_upgraded(sock)
            await sock.send(CLOSE_FROM_CLIENT)
            while await sock.recv(65536):
                pass

    async def read_until_closed(sock: Any, engine: Any, done: Any) -> None:
        while data := await sock.recv(65536):
            engine.receive_data(data)
        engine.receive_eof()
        done.set()

    async def minimal_reader() -> None:
        # What open_websocket's structure needs: a nursery, the engine, and
        # a task that reads while the body runs.
        async with trio.open_nursery() as nursery:
            with trio.socket.socket() as sock:
                await open_upgraded(sock)
                engine = client_engine()
                done = trio.Event()
                nursery.start_soon(read_until_closed, sock, engine, done)
                engine.send_close(1000)
                await sock.send(b"".join(engine.data_to_send()))
                await done.wait()

    return {"plain": plain, "minimal": minimal, "minimal-reader": minimal_reader}[kind]


def client_engine() -> Any:
    """The engine's client side opened for frames, as this library opens it."""
    from trio_websocket._engine import open_directly
    from websockets.client import ClientProtocol
    from websockets.uri import parse_uri

    engine = ClientProtocol(parse_uri("ws://127.0.0.1/"))
    open_directly(engine, [], None)
    return engine


def measure_client(kind: str, count: int) -> dict[str, float]:
    import trio

    async def main(port: int) -> dict[str, float]:
        one = client_opener(kind, port)
        for _ in range(WARM_UP):
            await one()
        cpu, start = cpu_seconds(), time.perf_counter()
        for _ in range(count):
            await one()
        elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu
        return {"rate": count / elapsed, "cpu_us": cpu / count * 1e6}

    with AsyncioServer() as port:
        return trio.run(main, port)


class AsyncioServer:
    """The minimal asyncio server of ``_serve_asyncio`` in another process."""

    def __enter__(self) -> int:
        command = [sys.executable, __file__, "_serve_asyncio"]
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        return int(self._process.stdout.readline())

    def __exit__(self, *exc_info: object) -> None:
        self._process.kill()
        self._process.wait(timeout=10)


def serve_asyncio() -> None:
    """Answer upgrades and close frames (then close), and EOF (then close)."""
    import asyncio

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport, self.buffer, self.open = transport, b"", False

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            if not self.open and b"\r\n\r\n" in self.buffer:
                head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
                self.transport.write(upgrade_response(head))
                self.open = True
            if self.open and self.buffer[:1] and self.buffer[0] & 0x0F == 8:
                self.transport.write(CLOSE_FROM_SERVER)
                self.transport.close()

        def eof_received(self) -> None:
            self.transport.close()

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    asyncio.run(main())


# -- Memory -----------------------------------------------------------------------


def traced_bytes() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def memory_server(kind: str, count: int) -> dict[str, float]:
    import trio

    engine_for = _engine_factory() if kind == "plain-engine" else None

    async def plain(stream: trio.SocketStream) -> None:
        engine = engine_for() if engine_for else None  # kept while it waits
        try:
            while await stream.receive_some():
                pass
        finally:
            del engine
            await stream.aclose()

    async def held_by_another_process(port: int, count: int) -> float:
        """Bytes per connection while ``count`` idle ones are open."""
        mode = "plain" if kind != "ours" else "ws"
        holder = [sys.executable, __file__, "_hold", str(port), mode, str(count)]
        before = traced_bytes()
        process = await trio.lowlevel.open_process(
            holder, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert process.stdout is not None and process.stdin is not None
        said = b""
        while b"ready" not in said:
            said += await process.stdout.receive_some()
        await trio.sleep(IDLE_WAIT)
        used = traced_bytes() - before
        await process.stdin.aclose()
        await process.wait()
        await trio.sleep(IDLE_WAIT)  # the server notices the closes
        return used / count

    async def main() -> dict[str, float]:
        async with trio.open_nursery() as nursery:
            if kind == "ours":
                port = await start_server("ours", nursery)
            else:
                port = await serve_plain_tcp(plain, nursery)
            await held_by_another_process(port, WARM_UP_CONNECTIONS)
            used = await held_by_another_process(port, count)
            nursery.cancel_scope.cancel()
        return {"bytes": used}

    tracemalloc.start()
    return trio.run(main)


def memory_client(kind: str, count: int) -> dict[str, float]:
    import trio

    engine_for = client_engine if kind == "plain-nursery-engine" else None

    async def main(port: int) -> dict[str, float]:
        release = trio.Event()
        own_nursery = kind.startswith("plain-nursery")

        async def plain(task_status: Any) -> None:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            engine = engine_for() if engine_for else None  # kept while it waits
            async with stream:
                if own_nursery:
                    async with trio.open_nursery():
                        task_status.started()
                        await release.wait()
                else:
                    task_status.started()
                    await release.wait()
            del engine

        async def library(task_status: Any) -> None:
            import trio_websocket as tw

            async with tw.open_websocket(
                "127.0.0.1", port, "/", use_ssl=False, compression=None
            ):
                task_status.started()
                await release.wait()

        async def held(count: int) -> float:
            """Bytes per connection while ``count`` idle ones are open."""
            nonlocal release
            release = trio.Event()
            holder = library if kind == "ours" else plain
            async with trio.open_nursery() as nursery:
                before = traced_bytes()
                for _ in range(count):
                    await nursery.start(holder)
                await trio.sleep(IDLE_WAIT)
                used = traced_bytes() - before
                release.set()
            return used / count

        await held(WARM_UP_CONNECTIONS)
        return {"bytes": await held(count)}

    tracemalloc.start()
    with AsyncioServer() as port:
        return trio.run(main, port)


# -- The runner -------------------------------------------------------------------

# (kind, environment, name): the rows both sides share, then each side's.
PLAIN = ("plain", "ours", "plain Trio TCP")
MINIMAL = ("minimal", "ours", "minimal WebSocket on Trio")
OURS = ("ours", "ours", "this library")
TW012 = ("tw012", "trio-websocket-0.12.2", "trio-websocket 0.12.2")
SERVER_ROWS = [
    PLAIN,
    MINIMAL,
    ("minimal-engine", "ours", "minimal + engine"),
    ("minimal-reader", "ours", "minimal + engine + reader task"),
    OURS,
    TW012,
]
CLIENT_ROWS = [
    PLAIN,
    MINIMAL,
    ("minimal-reader", "ours", "minimal + nursery + engine + reader task"),
    OURS,
    TW012,
]
MEMORY_SERVER_ROWS = [
    ("plain", "plain Trio TCP"),
    ("plain-engine", "plain + engine"),
    ("ours", "this library"),
]
MEMORY_CLIENT_ROWS = [
    ("plain", "plain Trio TCP"),
    ("plain-nursery", "plain + nursery"),
    ("plain-nursery-engine", "plain + nursery + engine"),
    ("ours", "this library"),
]


def run_child(env: str, *args: str) -> dict[str, float]:
    command = [str(ENVS[env].python), __file__, *args]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def handshake_table(
    side: str, rows: list[tuple[str, str, str]], count: int, repeats: int
) -> str:
    samples: dict[str, list[dict[str, float]]] = {kind: [] for kind, _, _ in rows}
    for repeat in range(repeats):
        shift = repeat % len(rows)
        for kind, env, _ in rows[shift:] + rows[:shift]:
            samples[kind].append(run_child(env, f"_{side}", kind, str(count)))
            print(f"  {side} {kind}: {samples[kind][-1]}", flush=True)
    plain = samples["plain"]
    tw012 = samples["tw012"]
    lines = [
        "| row | handshakes/s | CPU µs per handshake | rate ÷ plain | "
        "rate ÷ 0.12.2 | CPU ÷ plain |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind, _, name in rows:
        got = samples[kind]

        def ratio(
            other: list[dict[str, float]], key: str, got: list[dict[str, float]] = got
        ) -> float:
            return statistics.median(
                g[key] / o[key] for g, o in zip(got, other, strict=True)
            )

        lines.append(
            f"| {name} | {statistics.median(g['rate'] for g in got):,.0f} "
            f"| {statistics.median(g['cpu_us'] for g in got):.0f} "
            f"| {ratio(plain, 'rate'):.2f} | {ratio(tw012, 'rate'):.2f} "
            f"| {ratio(plain, 'cpu_us'):.2f} |"
        )
    return "\n".join(lines)


def memory_table(side: str, rows: list[tuple[str, str]], count: int) -> str:
    lines = ["| row | KiB per idle connection |", "|---|---:|"]
    for kind, name in rows:
        got = run_child("ours", f"_memory_{side}", kind, str(count))
        print(f"  memory {side} {kind}: {got}", flush=True)
        lines.append(f"| {name} | {got['bytes'] / 1024:.2f} |")
    return "\n".join(lines)


def report(tables: dict[str, str], args: argparse.Namespace, seconds: float) -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=BENCH_DIR,
        check=False,
    ).stdout.strip()
    return "\n\n".join(
        [
            "# Floors: the least a handshake and an idle connection cost on Trio",
            f"Run: `python benchmarks/floors.py{' --quick' if args.quick else ''}` "
            f"on {datetime.now():%Y-%m-%d %H:%M}, {seconds:.0f} s, commit {commit}. "
            f"Machine: {platform.platform()}, {os.cpu_count()} CPUs. "
            f"{args.count:,} handshakes per cell, median of {args.repeats} repeats.",
            "What each row does is in the docstring of `benchmarks/floors.py`. "
            "The minimal rows are not libraries: they validate nothing, keep no "
            "reader task and no timeouts, and write their close frames by hand.",
            "## Handshakes, server under test (raw blocking client)",
            tables["server"],
            "## Handshakes, client under test (minimal asyncio server)",
            tables["client"],
            "## Memory per idle connection, server (1,000 open)",
            tables["memory_server"],
            "## Memory per idle connection, client (1,000 open)",
            tables["memory_client"],
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    args.count, args.repeats = (1000, 3) if args.quick else (3000, 5)
    ensure(["ours", "trio-websocket-0.12.2"], args.rebuild, print)
    started = time.perf_counter()
    tables = {
        "server": handshake_table("server", SERVER_ROWS, args.count, args.repeats),
        "client": handshake_table("client", CLIENT_ROWS, args.count, args.repeats),
        "memory_server": memory_table("server", MEMORY_SERVER_ROWS, 1000),
        "memory_client": memory_table("client", MEMORY_CLIENT_ROWS, 1000),
    }
    text = report(tables, args, time.perf_counter() - started)
    RESULTS.write_text(text + "\n")
    print(text)
    return 0


CHILDREN: dict[str, Callable[[list[str]], object]] = {
    "_drive": lambda a: drive(int(a[0]), int(a[2]), a[1] == "ws"),
    "_hold": lambda a: hold(int(a[0]), int(a[2]), a[1] == "ws"),
    "_serve_asyncio": lambda a: serve_asyncio(),
    "_server": lambda a: print(json.dumps(measure_server(a[0], int(a[1])))),
    "_client": lambda a: print(json.dumps(measure_client(a[0], int(a[1])))),
    "_memory_server": lambda a: print(json.dumps(memory_server(a[0], int(a[1])))),
    "_memory_client": lambda a: print(json.dumps(memory_client(a[0], int(a[1])))),
}

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in CHILDREN:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(8192, hard), hard))
        CHILDREN[sys.argv[1]](sys.argv[2:])
        sys.exit(0)
    sys.exit(main())
