"""Fan-out deliveries per second of the chat-style relay, through Redis or not.

    .venv/bin/python benchmarks/fanout.py               # about two minutes
    .venv/bin/python benchmarks/fanout.py --repeats 3 --seconds 1

The server is the relay of ``serve --broadcast --pubsub``: each worker of
:func:`run_workers` (``SO_REUSEPORT``) holds, through ``lifespan=``, one hub
and one :meth:`PubSub.fan_out` group; every connection is added to the group,
and what a connection sends is published on the channel, so every client of
every worker receives it. Three servers run, each in its own process tree:
1 worker through Redis, 2 workers through Redis, 1 worker with the
in-process :class:`PubSub` (same relay, no Redis).

The clients all run in this process (a separate one from the servers),
as raw TCP sockets that do the handshake and then only count bytes: the
frames are of one size, so counting is cheap, and each frame's header is
checked. One client, the publisher, also sends (or two take turns, one on
each worker where there are two); together they keep at most a window of
messages ahead of the slowest client.

The load generator shares the servers' cores, so it is kept cheap: the
clients are read every few milliseconds (a read then takes many frames),
into one reused buffer. The window must cover the messages delivered while
a client waits for its next read, or the run measures the round trip, not
the relay; so the more clients there are to read (each read costs the same),
the longer the interval and the larger the window. What piles up for one
client between two reads stays far within a loopback socket's buffers, so
the relay's own queue per connection (64 messages, past which a slow client
is closed) stays empty; were it not so, the closed client would stop the run.
Everything is bounded (message count and time budget, timeouts on every
wait) and on 127.0.0.1; this script starts and stops its own
``redis-server``. Results: a table on stdout and ``results/fanout.md``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import select
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio
from trio_websocket import (
    ConnectionClosed,
    Endpoint,
    FanOut,
    PubSub,
    WebSocketRequest,
    open_redis_pubsub,
    run_workers,
    worker_index,
)

RESULTS = Path(__file__).parent / "results" / "fanout.md"
MAX_PENDING = 64  # as serve --broadcast (OUTBOX_SIZE): a slower client is closed
PAYLOAD = 64  # bytes of text per message
FRAME = 2 + PAYLOAD  # what a client receives per message: unmasked, short length
TEXT_FIN = 0x81
CLOSE_FIN = 0x88
READ_SIZE = 262144  # bytes per recv_into()
WARMUP = 200  # messages before each measurement (their deliveries are checked)
DRAIN_TIMEOUT = 15.0
CONNECT_TIMEOUT = 10.0
START_TIMEOUT = 60.0

# -- The server (in its own processes) -----------------------------------------

#: This worker's hub, channel and fan-out group, set by the lifespan.
_room: tuple[PubSub, str, FanOut] | None = None


@asynccontextmanager
async def _lifespan(
    hub_kind: str, redis_port: int, channel: str
) -> AsyncIterator[None]:
    global _room
    async with AsyncExitStack() as stack:
        if hub_kind == "redis":
            hub: PubSub = await stack.enter_async_context(
                open_redis_pubsub("127.0.0.1", redis_port)
            )
        else:
            hub = PubSub()
        group = await stack.enter_async_context(
            hub.fan_out(channel, max_pending=MAX_PENDING, slow="close")
        )
        _room = hub, channel, group
        try:
            yield
        finally:
            _room = None


async def _relay(request: WebSocketRequest) -> None:
    """The chat relay: what a client sends goes to every client of every worker."""
    assert _room is not None
    hub, channel, group = _room
    ws = await request.accept(extra_headers=[("X-Worker", str(worker_index()))])
    group.add(ws)
    try:
        while True:
            message = await ws.get_message()
            try:  # as serve --broadcast: no round trip to Redis per message
                hub.publish_nowait(channel, message)
            except trio.WouldBlock:
                await hub.publish(channel, message)
    except ConnectionClosed:
        pass
    finally:
        group.discard(ws)


def _serve_main(hub_kind: str, workers: int, redis_port: int, channel: str) -> None:
    def ready(endpoints: list[Endpoint]) -> None:
        print(f"READY {endpoints[0].port}", flush=True)

    run_workers(
        _relay,
        "127.0.0.1",
        0,
        workers=workers,
        grace=1.0,
        lifespan=partial(_lifespan, hub_kind, redis_port, channel),
        ready=ready,
    )


# -- Processes: redis-server and the servers -----------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_redis(port: int) -> subprocess.Popen[bytes]:
    options = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), *options, "--daemonize", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"redis-server exited at once (status {process.returncode})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return process
        except OSError:
            time.sleep(0.05)
    _stop(process)
    sys.exit("redis-server did not answer within 10 s")


@dataclass
class Server:
    name: str
    workers: int
    process: subprocess.Popen[bytes]
    port: int = 0


def _start_server(name: str, hub_kind: str, workers: int, redis_port: int) -> Server:
    command = [sys.executable, __file__, "--serve", hub_kind, str(workers)]
    command += [str(redis_port), f"bench:fanout:{name}"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE)
    return Server(name, workers, process)


def _wait_ready(server: Server) -> None:
    assert server.process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(server.process.stdout, selectors.EVENT_READ)
        if not selector.select(START_TIMEOUT):
            raise RuntimeError(f"server {server.name} did not start in time")
    line = server.process.stdout.readline().decode()
    if not line.startswith("READY "):
        raise RuntimeError(f"server {server.name} failed to start: {line!r}")
    server.port = int(line.split()[1])


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (the workers of a supervisor)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes (Linux /proc)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


# -- The clients (in this process) ---------------------------------------------

_REQUEST = (
    "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n"
)


def _connect(port: int) -> tuple[socket.socket, int]:
    """A raw WebSocket client: the handshake, and the worker that took it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=CONNECT_TIMEOUT)
    try:
        sock.sendall(_REQUEST.format(port=port).encode())
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = sock.recv(4096)
            if not chunk or len(response) > 16384:
                raise RuntimeError(f"bad handshake response: {response[:80]!r}")
            response += chunk
        head, rest = response.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101") or rest:
            raise RuntimeError(f"handshake refused: {head[:80]!r}")
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"x-worker":
                return sock, int(value)
        raise RuntimeError("no X-Worker header in the response")
    except BaseException:
        sock.close()
        raise


def _connect_spread(port: int, count: int, workers: int) -> list[socket.socket]:
    """``count`` connections split evenly over the workers (the kernel picks
    the worker; a connection to a worker already full is closed again).

    The first ``workers`` connections are on different workers, so that
    publishers taken from the front of the list are spread over them.
    """
    quota = -(-count // workers)
    by_worker: list[list[socket.socket]] = [[] for _ in range(workers)]
    kept = 0
    deadline = time.monotonic() + CONNECT_TIMEOUT
    for _ in range(count * 20):
        if kept == count or time.monotonic() > deadline:
            break
        sock, index = _connect(port)
        if len(by_worker[index]) < quota:
            by_worker[index].append(sock)
            kept += 1
        else:
            sock.close()
    # Round-robin over the workers: worker 0's first, worker 1's first, ...
    spread = [
        sock for layer in itertools.zip_longest(*by_worker) for sock in layer if sock
    ]
    if kept < count:
        for sock in spread:
            sock.close()
        raise RuntimeError(f"could not spread {count} clients over {workers} workers")
    return spread


class Clients:
    """The connected clients, read with one epoll loop (cheaper than tasks)."""

    def __init__(self, socks: list[socket.socket], read_interval: float) -> None:
        self.socks = socks
        self.read_interval = read_interval
        self.received = [0] * len(socks)  # frames, per client
        self._offsets = [0] * len(socks)  # bytes; frames start at multiples of FRAME
        self._index = {sock.fileno(): i for i, sock in enumerate(socks)}
        # One buffer for every read: a fresh 256 KiB bytes per recv() costs
        # the clients more than the reading (allocation and page faults).
        self._buffer = bytearray(READ_SIZE)
        self._epoll = select.epoll()
        for sock in socks:
            sock.settimeout(5.0)  # epoll says when a read will not wait
            self._epoll.register(sock.fileno(), select.EPOLLIN)

    def close(self) -> None:
        self._epoll.close()
        for sock in self.socks:
            sock.close()

    def slowest(self) -> int:
        return min(self.received)

    def ready(self) -> bool:
        return bool(self._epoll.poll(0, 1))

    def pump(self, timeout: float) -> None:
        """Read what has arrived (waiting at most ``timeout`` for something).

        With a ``read_interval``, first let frames pile up for that long, so
        that one ``recv`` takes several (the clients' cost per delivery would
        otherwise match the server's, on the same cores).
        """
        if self.read_interval:
            time.sleep(min(self.read_interval, max(timeout, 0.0)))
            timeout = 0.0 if self.ready() else timeout - self.read_interval
        for fd, _ in self._epoll.poll(max(timeout, 0.0)):
            index = self._index[fd]
            size = self.socks[index].recv_into(self._buffer)
            if not size:
                raise RuntimeError(f"client {index}: the server closed the connection")
            offset = self._offsets[index]
            headers = self._buffer[(-offset) % FRAME : size : FRAME]
            if headers.count(TEXT_FIN) != len(headers):
                raise RuntimeError(
                    f"client {index}: {_unexpected(self._buffer[:size])}"
                )
            offset += size
            self._offsets[index] = offset
            self.received[index] = offset // FRAME


def _unexpected(data: bytearray) -> str:
    """What came instead of a message: a close frame says why."""
    at = data.find(bytes([CLOSE_FIN]))
    if at >= 0 and len(data) >= at + 4:
        code = int.from_bytes(data[at + 2 : at + 4], "big")
        reason = bytes(data[at + 4 : at + 2 + data[at + 1]]).decode(errors="replace")
        return f"closed by the server with {code} ({reason})"
    return "an unexpected frame"


def _message_frames(count: int) -> bytes:
    """``count`` masked text frames of PAYLOAD bytes (all-zero mask key)."""
    frame = bytes([TEXT_FIN, 0x80 | PAYLOAD, 0, 0, 0, 0]) + b"m" * PAYLOAD
    return frame * count


def _publish(
    clients: Clients,
    publishers: int,
    start: int,
    count: int,
    window: int,
    deadline: float,
) -> int:
    """Send up to ``count`` messages (sent before: ``start``), at most
    ``window`` ahead of the slowest client, until ``deadline``; wait until
    every client has them all. Returns how many were sent.

    The first ``publishers`` clients take turns, a batch each.
    """
    batch = max(1, window // 4)
    frames = _message_frames(batch)
    sent = 0
    turns = itertools.cycle(clients.socks[:publishers])
    while sent < count and (now := time.perf_counter()) < deadline:
        if start + sent - clients.slowest() + batch <= window:
            n = min(batch, count - sent)
            next(turns).sendall(frames if n == batch else frames[: n * (6 + PAYLOAD)])
            sent += n
        else:
            clients.pump(deadline - now)
    drain_deadline = time.perf_counter() + DRAIN_TIMEOUT
    while clients.slowest() < start + sent:
        if time.perf_counter() > drain_deadline:
            raise RuntimeError(f"not delivered within {DRAIN_TIMEOUT} s")
        clients.pump(0.5)
    return sent


@dataclass
class Config:
    key: str
    server: str
    clients: int
    label: str
    publishers: int = 1
    read_ms: float = 5.0  # let frames pile up this long between reads (0: don't)
    window: int = 500  # messages in flight, at most


@dataclass
class Sample:
    messages: int
    seconds: float
    clients: int
    server_cpu: float
    client_cpu: float
    redis_cpu: float

    @property
    def deliveries_per_s(self) -> float:
        return self.messages * self.clients / self.seconds

    @property
    def us_per_message(self) -> float:
        return self.seconds / self.messages * 1e6


def _measure(
    config: Config, server: Server, redis_pid: int, args: argparse.Namespace
) -> Sample:
    socks = _connect_spread(server.port, config.clients, server.workers)
    clients = Clients(socks, config.read_ms / 1000)
    worker_pids = _children(server.process.pid)
    try:
        # Warm-up, and a check that every client gets every message.
        _publish(
            clients,
            config.publishers,
            0,
            WARMUP,
            config.window,
            time.perf_counter() + 10,
        )
        if clients.received != [WARMUP] * len(clients.socks):
            raise RuntimeError(f"warm-up deliveries: {clients.received}")
        pids = [*worker_pids, redis_pid]
        before = _cpu_seconds(worker_pids), time.process_time(), _cpu_seconds(pids)
        start = time.perf_counter()
        sent = _publish(
            clients,
            config.publishers,
            WARMUP,
            args.messages,
            config.window,
            start + args.seconds,
        )
        seconds = time.perf_counter() - start
        after = _cpu_seconds(worker_pids), time.process_time(), _cpu_seconds(pids)
        if sum(clients.received) != (WARMUP + sent) * len(clients.socks):
            raise RuntimeError("some client got more messages than were sent")
    finally:
        clients.close()
    server_cpu, client_cpu, all_cpu = (
        b - a for a, b in zip(before, after, strict=True)
    )
    return Sample(
        sent, seconds, len(clients.socks), server_cpu, client_cpu, all_cpu - server_cpu
    )


#: 400 clients are read a quarter as often as 40 (each read costs the same),
#: with a window to match.
MANY: dict[str, Any] = {"read_ms": 20.0, "window": 2000}

CONFIGS = [
    Config("redis1", "redis1", 40, "1 worker, Redis hub"),
    Config("redis2", "redis2", 40, "2 workers, Redis hub"),
    Config("redis1_p2", "redis1", 40, "1 worker, Redis hub, 2 publishers", 2),
    Config("redis2_p2", "redis2", 40, "2 workers, Redis hub, 2 publishers", 2),
    Config("redis1_400", "redis1", 400, "1 worker, Redis hub, 400 clients", 2, **MANY),
    Config("redis2_400", "redis2", 400, "2 workers, Redis hub, 400 clients", 2, **MANY),
    Config("local1", "local1", 40, "1 worker, in-process hub"),
    Config("redis1_c1", "redis1", 1, "1 worker, Redis hub, 1 client", read_ms=0),
    Config("local1_c1", "local1", 1, "1 worker, in-process hub, 1 client", read_ms=0),
]


def _run_all(
    servers: dict[str, Server], redis_pid: int, args: argparse.Namespace
) -> dict[str, list[Sample]]:
    samples: dict[str, list[Sample]] = {config.key: [] for config in CONFIGS}
    for repeat in range(args.repeats):
        order = CONFIGS[repeat % len(CONFIGS) :] + CONFIGS[: repeat % len(CONFIGS)]
        for config in order:
            sample = _measure(config, servers[config.server], redis_pid, args)
            samples[config.key].append(sample)
            print(
                f"  repeat {repeat + 1}/{args.repeats}  {config.label:<36}"
                f" {sample.deliveries_per_s:>9,.0f} deliveries/s"
                f"  ({sample.messages} messages in {sample.seconds:.2f} s)",
                flush=True,
            )
            time.sleep(0.1)
    return samples


# -- Report --------------------------------------------------------------------


def _summary(values: list[float], fmt: str) -> str:
    return (
        f"{statistics.median(values):{fmt}} ({min(values):{fmt}}–{max(values):{fmt}})"
    )


def _report(samples: dict[str, list[Sample]], args: argparse.Namespace) -> str:
    def per_repeat(fn: Callable[[int], float]) -> list[float]:
        return [fn(i) for i in range(args.repeats)]

    def rate(key: str, i: int) -> float:
        return samples[key][i].deliveries_per_s

    def us(key: str, i: int) -> float:
        return samples[key][i].us_per_message

    def per_server_core(key: str, i: int) -> float:
        sample = samples[key][i]
        return sample.deliveries_per_s * sample.seconds / sample.server_cpu

    rows = []
    for config in CONFIGS:
        runs = samples[config.key]
        rows.append(
            f"| {config.label} | {config.clients} "
            f"| {config.window} | {config.read_ms:g} "
            f"| {_summary([s.deliveries_per_s for s in runs], ',.0f')} "
            f"| {_summary([s.us_per_message for s in runs], ',.1f')} "
            f"| {_summary([s.server_cpu / s.seconds for s in runs], '.2f')} "
            f"| {_summary([s.client_cpu / s.seconds for s in runs], '.2f')} "
            f"| {_summary([s.redis_cpu / s.seconds for s in runs], '.2f')} |"
        )
    pairs = [  # (1 worker, 2 workers, what they share)
        ("redis1", "redis2", "40 clients, 1 publisher"),
        ("redis1_p2", "redis2_p2", "40 clients, 2 publishers"),
        ("redis1_400", "redis2_400", "400 clients, 2 publishers"),
    ]
    scaling_rows = []
    verdicts = []
    for one, two, what in pairs:
        scaling = [rate(two, i) / rate(one, i) for i in range(args.repeats)]
        efficiency = [
            per_server_core(two, i) / per_server_core(one, i)
            for i in range(args.repeats)
        ]
        scaling_rows += [
            f"| 2 workers ÷ 1 worker, {what} | {_summary(scaling, '.2f')} × |",
            f"| the same, deliveries per second of server CPU "
            f"| {_summary(efficiency, '.2f')} × |",
        ]
        median = statistics.median(scaling)
        verdicts.append(
            f"{what}: {'met' if median >= 1.6 else 'not met'} ({median:.2f} ×)"
        )
    redis_vs_local = per_repeat(lambda i: rate("redis1", i) / rate("local1", i))
    hop40 = per_repeat(lambda i: us("redis1", i) - us("local1", i))
    hop1 = per_repeat(lambda i: us("redis1_c1", i) - us("local1_c1", i))
    cores = os.cpu_count()
    redis_version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    lines = [
        "# Fan-out through Redis: deliveries per second",
        "",
        f"`python benchmarks/fanout.py --repeats {args.repeats} "
        f"--seconds {args.seconds:g} --messages {args.messages}`",
        "",
        f"Machine: {cores} cores, {platform.machine()}, "
        f"Linux {platform.release()}, Python {platform.python_version()}, "
        f"{redis_version.split(' sha=')[0]}. Loopback only.",
        "",
        f"One publisher (or two taking turns, one per worker where there are two) "
        f"sends {PAYLOAD}-byte text messages (at most a window "
        "ahead of the slowest client, which is read every few ms) through the "
        "chat relay; every message reaches every client (a delivery). "
        "Cells: median (min–max) over "
        f"{args.repeats} repeats, configurations rotated on each repeat. "
        "CPU columns: CPU seconds per wall second of the server's workers, "
        "of the client process and of redis-server during the measurement "
        "(1.00 = one core busy).",
        "",
        "| configuration | clients | window | read every (ms) "
        "| deliveries/s | µs per message | server CPU | client CPU | redis CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "Ratios, taken within each repeat:",
        "",
        "| ratio | value |",
        "|---|---:|",
        *scaling_rows,
        f"| Redis hub ÷ in-process hub (1 worker, 40 clients) "
        f"| {_summary(redis_vs_local, '.2f')} × |",
        f"| Redis hop, µs per message (1 worker, 40 clients) "
        f"| {_summary(hop40, '+.1f')} |",
        f"| Redis hop, µs per message (1 worker, 1 client) "
        f"| {_summary(hop1, '+.1f')} |",
        "",
        "Target of the issue, 2 workers ≥ 1.6 × 1 worker on 2 cores: "
        + "; ".join(verdicts)
        + ".",
    ]
    return "\n".join(lines) + "\n"


NOTES = "\n## Notes"


def _kept_notes(path: Path) -> str:
    """The hand-written ``## Notes`` section of an earlier report, if any."""
    if not path.exists():
        return ""
    earlier = path.read_text()
    start = earlier.find(NOTES)
    return earlier[start:] if start >= 0 else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.5, help="budget per run")
    parser.add_argument("--messages", type=int, default=50_000, help="cap per run")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--serve", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        hub_kind, workers, redis_port, channel = args.serve
        _serve_main(hub_kind, int(workers), int(redis_port), channel)
        return 0
    if shutil.which("redis-server") is None:
        print(
            "redis-server not found: this benchmark starts its own Redis "
            "(apt-get install redis-server)",
            file=sys.stderr,
        )
        return 2
    redis_port = _free_port()
    redis = _start_redis(redis_port)
    servers: dict[str, Server] = {}
    try:
        servers = {
            "redis1": _start_server("redis1", "redis", 1, redis_port),
            "redis2": _start_server("redis2", "redis", 2, redis_port),
            "local1": _start_server("local1", "local", 1, redis_port),
        }
        for server in servers.values():
            _wait_ready(server)
        print(
            f"redis-server on port {redis_port}; servers on ports "
            + ", ".join(f"{s.name} {s.port}" for s in servers.values())
            + f"; {os.cpu_count()} cores, Python {platform.python_version()}",
            flush=True,
        )
        samples = _run_all(servers, redis.pid, args)
    finally:
        for server in servers.values():
            _stop(server.process)
        _stop(redis)
    report = _report(samples, args)
    print()
    print(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report + _kept_notes(args.output))
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
