"""Soak test: ``python benchmarks/soak.py [--seconds 30]``.

Runs our echo server in a child process and, in this process, well-behaved
clients (random message sizes, text and binary, connections opened and
closed all the time) together with hostile ones that hang up at a random
stage of the handshake or of a message, with FIN or RST. Every few seconds
it prints a row of the server's resident memory (VmRSS), open descriptors,
Trio tasks and open WebSocket connections, so that a leak shows as a column
that keeps growing. Once the clients have stopped it samples the idle server
again and ends with a verdict comparing that with the idle server before the
load, and the first loaded sample's memory with the last's.

Runs with the repository's environment (``.venv/bin/python
benchmarks/soak.py``); needs Linux (``/proc``). Bounded in time: the load
runs ``--seconds`` seconds, then at most ``--settle`` seconds of teardown.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import random
import socket
import struct
import subprocess
import sys
import time
import tracemalloc
from dataclasses import dataclass, field
from typing import Any

import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)

HOST = "127.0.0.1"
SCRIPT = os.path.abspath(__file__)
#: Largest message a well-behaved client sends (sizes are log-uniform).
MAX_SIZE = 256 * 2**10
#: Bound on the wait for one echo or one hostile step.
STEP_TIMEOUT = 10.0
#: RSS growth between the first and last loaded samples taken as a leak: both
#: this many MiB and this fraction (allocator noise stays well below).
LEAK_MIB, LEAK_FRACTION = 8.0, 0.2
#: With --tracemalloc: frames per allocation site, and sites listed.
GROWTH_FRAMES, GROWTH_SITES = 4, 8


# -- The server, in a child process ------------------------------------------


def rss_kib(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/<pid>/status")


async def echo(request: WebSocketRequest) -> None:
    ws = await request.accept()
    try:
        while True:
            await ws.send_message(await ws.get_message())
    except ConnectionClosed:
        pass


async def serve(trace: bool) -> None:
    """The child: serve, and answer each command line on stdin with JSON.

    ``sample`` gets the figures; with ``trace`` (tracemalloc on), ``mark``
    takes a snapshot and ``growth`` lists the allocation sites that grew
    most since then.
    """
    if trace:
        tracemalloc.start(GROWTH_FRAMES)
    mark: tracemalloc.Snapshot | None = None
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, echo, HOST, 0, None)
        stdout = trio.lowlevel.FdStream(os.dup(1))
        stdin = trio.lowlevel.FdStream(os.dup(0))
        await stdout.send_all(f"{server.port}\n".encode())
        buffer = b""
        while True:
            data = await stdin.receive_some()
            if not data:
                break
            buffer += data
            while b"\n" in buffer:
                command, buffer = buffer.split(b"\n", 1)
                answer: object = None
                if command == b"collect":
                    answer = gc.collect()
                elif command == b"mark" and trace:
                    mark = tracemalloc.take_snapshot()
                elif command == b"growth" and mark is not None:
                    answer = growth(mark, tracemalloc.take_snapshot())
                else:
                    answer = {
                        "rss_kib": rss_kib(),
                        "fds": len(os.listdir("/proc/self/fd")),
                        "tasks": trio.lowlevel.current_statistics().tasks_living,
                        "connections": len(server.connections),
                        "traced_kib": tracemalloc.get_traced_memory()[0] // 1024
                        if trace
                        else None,
                    }
                await stdout.send_all(json.dumps(answer).encode() + b"\n")
        nursery.cancel_scope.cancel()


def growth(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> list[str]:
    """The allocation sites that grew most between two snapshots."""
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    stats = after.filter_traces(ignore).compare_to(
        before.filter_traces(ignore), "traceback"
    )
    lines = []
    for stat in stats[:GROWTH_SITES]:
        if stat.size_diff <= 0:
            break
        where = " <- ".join(
            f"{os.path.basename(frame.filename)}:{frame.lineno}"
            for frame in reversed(stat.traceback)
        )
        lines.append(
            f"{stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+6d} blocks  {where}"
        )
    return lines


# -- The clients, in this process ---------------------------------------------


@dataclass
class Load:
    """What the clients did, counted since the last sample."""

    messages: int = 0
    payload_bytes: int = 0
    sessions: int = 0
    hang_ups: int = 0
    failures: list[str] = field(default_factory=list)


def random_message(rng: random.Random) -> str | bytes:
    size = int(math.exp(rng.uniform(0, math.log(MAX_SIZE))))
    if rng.random() < 0.5:
        return rng.randbytes(size)
    return "".join(rng.choices("abcdefghij é€", k=size))


async def good_client(url: str, rng: random.Random, load: Load) -> None:
    """Open, echo a few random messages, close normally; over and over."""
    while True:
        try:
            async with open_websocket_url(url) as ws:
                for _ in range(rng.randint(1, 30)):
                    message = random_message(rng)
                    with trio.fail_after(STEP_TIMEOUT):
                        await ws.send_message(message)
                        answer = await ws.get_message()
                    if answer != message:
                        load.failures.append("an echo differed from its message")
                    load.messages += 1
                    load.payload_bytes += len(message)
            load.sessions += 1
        except (HandshakeError, ConnectionClosed, trio.TooSlowError) as exc:
            load.failures.append(f"{type(exc).__name__}: {exc}")
            await trio.sleep(0.1)


def request_bytes() -> bytes:
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    return (
        f"GET /soak HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def masked_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    size = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if size < 126:
        head += bytes([0x80 | size])
    elif size < 2**16:
        head += bytes([0x80 | 126]) + struct.pack("!H", size)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", size)
    key = os.urandom(4)
    masked = bytes(byte ^ key[i % 4] for i, byte in enumerate(payload))
    return head + key + masked


REQUEST = request_bytes()
#: Stage name -> (bytes before the 101 is awaited, bytes after it or None).
STAGES: dict[str, tuple[bytes, bytes | None]] = {
    "after-connect": (b"", None),
    "mid-request": (REQUEST[: len(REQUEST) // 2], None),
    "after-request": (REQUEST, None),
    "after-101": (REQUEST, b""),
    "mid-frame-header": (REQUEST, masked_frame(0x2, b"x" * 300)[:3]),
    "mid-payload": (REQUEST, masked_frame(0x2, b"x" * 3000)[:1500]),
    "mid-fragments": (REQUEST, masked_frame(0x1, b"first", fin=False)),
    "after-close": (REQUEST, masked_frame(0x8, struct.pack("!H", 1000))),
}


async def hostile_client(port: int, rng: random.Random, load: Load) -> None:
    """Connect, stop at a random stage, hang up with FIN or RST; over and over."""
    while True:
        before, after = STAGES[rng.choice(list(STAGES))]
        try:
            with trio.fail_after(STEP_TIMEOUT):
                stream = await trio.open_tcp_stream(HOST, port)
                try:
                    await stream.send_all(before)
                    if after is not None:
                        head = b""
                        while b"\r\n\r\n" not in head and len(head) < 65536:
                            chunk = await stream.receive_some()
                            if not chunk:
                                break
                            head += chunk
                        if not head.startswith(b"HTTP/1.1 101"):
                            load.failures.append(
                                f"no 101 for a hostile client: {head!r}"
                            )
                        await stream.send_all(after)
                finally:
                    if rng.random() < 0.5:
                        linger = struct.pack("ii", 1, 0)
                        stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                    await trio.aclose_forcefully(stream)
            load.hang_ups += 1
        except (OSError, trio.BrokenResourceError, trio.TooSlowError) as exc:
            load.failures.append(f"hostile client: {type(exc).__name__}: {exc}")
        await trio.sleep(rng.uniform(0, 0.02))


# -- Sampling and the table ---------------------------------------------------


class Server:
    """The child process and its sample channel."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._buffer = b""

    async def read_line(self) -> bytes:
        assert self.process.stdout is not None
        while b"\n" not in self._buffer:
            data = await self.process.stdout.receive_some()
            if not data:
                raise RuntimeError("the server process ended")
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    async def ask(self, command: str) -> Any:
        assert self.process.stdin is not None
        with trio.fail_after(STEP_TIMEOUT):
            await self.process.stdin.send_all(command.encode() + b"\n")
            return json.loads(await self.read_line())

    async def sample(self) -> dict[str, Any]:
        sample: dict[str, Any] = await self.ask("sample")
        return sample


HEADER = (
    f"{'time s':>7} {'RSS MiB':>8} {'traced':>7} {'fds':>5} {'tasks':>6} {'conns':>6}"
    f" {'msg/s':>7} {'MiB/s':>6} {'sessions':>8} {'hang-ups':>8} {'failures':>8}"
)


def traced(sample: dict[str, Any]) -> str:
    kib = sample.get("traced_kib")
    return "-" if kib is None else f"{kib / 1024:.1f}"


def row(elapsed: float, sample: dict[str, Any], load: Load, period: float) -> str:
    rate = load.messages / period if period else 0.0
    mib = load.payload_bytes / period / 2**20 if period else 0.0
    return (
        f"{elapsed:7.1f} {sample['rss_kib'] / 1024:8.1f} {traced(sample):>7}"
        f" {sample['fds']:5d}"
        f" {sample['tasks']:6d} {sample['connections']:6d} {rate:7.0f} {mib:6.1f}"
        f" {load.sessions:8d} {load.hang_ups:8d} {len(load.failures):8d}"
    )


def verdict(
    idle_before: dict[str, Any],
    idle_after: dict[str, Any],
    first: dict[str, Any],
    last: dict[str, Any],
    failures: int,
) -> str:
    problems = []
    for key in ("fds", "tasks"):
        if idle_after[key] > idle_before[key]:
            problems.append(f"{key} {idle_before[key]} -> {idle_after[key]} when idle")
    if idle_after["connections"]:
        problems.append(f"{idle_after['connections']} connections left open")
    growth = (last["rss_kib"] - first["rss_kib"]) / 1024
    if growth > LEAK_MIB and growth > LEAK_FRACTION * first["rss_kib"] / 1024:
        problems.append(f"RSS grew {growth:+.1f} MiB under steady load")
    if failures:
        problems.append(f"{failures} client failures")
    traced_growth = ""
    if idle_before.get("traced_kib") is not None:
        before_mib = idle_before["traced_kib"] / 1024
        after_mib = idle_after["traced_kib"] / 1024
        traced_growth = f"; traced idle {before_mib:.1f} -> {after_mib:.1f} MiB"
        if after_mib - before_mib > 1:
            problems.append(f"traced memory grew {after_mib - before_mib:+.1f} MiB")
    figures = (
        f"idle tasks {idle_before['tasks']} -> {idle_after['tasks']}, "
        f"fds {idle_before['fds']} -> {idle_after['fds']}, "
        f"connections {idle_after['connections']}; "
        f"RSS first -> last loaded sample {first['rss_kib'] / 1024:.1f} -> "
        f"{last['rss_kib'] / 1024:.1f} MiB ({growth:+.1f}), "
        f"idle {idle_before['rss_kib'] / 1024:.1f} -> "
        f"{idle_after['rss_kib'] / 1024:.1f} MiB{traced_growth}"
    )
    if problems:
        return f"verdict: LEAK? {'; '.join(problems)} ({figures})"
    return f"verdict: no leak seen ({figures})"


async def soak(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    command = [sys.executable, SCRIPT, "--serve"]
    if args.tracemalloc:
        command.append("--tracemalloc")
    process = await trio.lowlevel.open_process(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    server = Server(process)
    try:
        with trio.fail_after(STEP_TIMEOUT):
            port = int(await server.read_line())
        url = f"ws://{HOST}:{port}/soak"
        await server.ask("collect")
        idle_before = await server.sample()
        if args.tracemalloc:
            await server.ask("mark")
        print(
            f"server pid {process.pid} on port {port}; {args.clients} clients, "
            f"{args.hostile} hostile, {args.seconds:g} s, samples every "
            f"{args.interval:g} s, seed {args.seed}"
        )
        print(HEADER)
        print(row(0.0, idle_before, Load(), 0.0) + "   (idle)")
        load = Load()
        failures = 0
        samples: list[dict[str, Any]] = []
        start = last_time = time.monotonic()
        async with trio.open_nursery() as clients:
            for _ in range(args.clients):
                child = random.Random(rng.random())
                clients.start_soon(good_client, url, child, load)
            for _ in range(args.hostile):
                child = random.Random(rng.random())
                clients.start_soon(hostile_client, port, child, load)
            while (elapsed := time.monotonic() - start) < args.seconds:
                await trio.sleep(min(args.interval, args.seconds - elapsed))
                sample = await server.sample()
                now = time.monotonic()
                samples.append(sample)
                print(row(now - start, sample, load, now - last_time), flush=True)
                failures += len(load.failures)
                for failure in load.failures[:3]:
                    print(f"    failure: {failure}")
                last_time = now
                load.messages = load.payload_bytes = load.sessions = 0
                load.hang_ups = 0
                load.failures.clear()
            clients.cancel_scope.cancel()
        # Clients gone: let the server notice, within --settle seconds.
        idle_after = await server.sample()
        deadline = time.monotonic() + args.settle
        while time.monotonic() < deadline and (
            idle_after["connections"]
            or idle_after["tasks"] > idle_before["tasks"]
            or idle_after["fds"] > idle_before["fds"]
        ):
            await trio.sleep(0.2)
            idle_after = await server.sample()
        print(
            row(time.monotonic() - start, idle_after, Load(), 0.0)
            + "   (idle, clients gone)"
        )
        # What only the cyclic garbage collector frees is not a leak, but
        # shows here: the server is idle, so nothing triggers a collection.
        collected = await server.ask("collect")
        collected_sample = await server.sample()
        print(
            row(time.monotonic() - start, collected_sample, Load(), 0.0)
            + f"   (idle, gc.collect() freed {collected} objects)"
        )
        first, last = samples[0] if samples else idle_after, idle_after
        if len(samples) > 1:
            last = samples[-1]
        if args.tracemalloc and samples:
            print("allocation sites grown since the idle server before the load:")
            for line in await server.ask("growth"):
                print(f"  {line}")
        print(verdict(idle_before, collected_sample, first, last, failures))
    finally:
        assert process.stdin is not None
        await process.stdin.aclose()
        with trio.move_on_after(STEP_TIMEOUT):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30, help="load duration")
    parser.add_argument("--interval", type=float, default=5, help="seconds per row")
    parser.add_argument("--clients", type=int, default=6, help="well-behaved")
    parser.add_argument("--hostile", type=int, default=2, help="hanging up")
    parser.add_argument("--settle", type=float, default=10, help="idle wait bound")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="trace the server's Python allocations (slower): a traced-memory"
        " column and, at the end, the allocation sites that grew",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        trio.run(serve, args.tracemalloc)
        return 0
    return trio.run(soak, args)


if __name__ == "__main__":
    sys.exit(main())
