"""Redis clients under Trio: does a subscription survive a redis-server restart?

    PYTHONPATH=. /tmp/glide/bin/python benchmarks/redis_clients.py    # 2-3 minutes
    PYTHONPATH=. /tmp/glide/bin/python benchmarks/redis_clients.py --trials 2

The evidence for the choice of Redis client behind ``open_redis_pubsub``.
Five configurations, each as an application would use it:

* ``coredis``: coredis with its default retry policies (the library
  reconnects and subscribes again by itself);
* ``coredis-get``: the same, read with ``get_message()`` in a loop rather
  than ``async for`` (whose iteration may end on a disconnection);
* ``glide``: valkey-glide's async client with its default reconnection
  (subscriptions given at client creation, read with ``get_pubsub_message``;
  it picks its Trio support by itself, through sniffio and AnyIO);
* ``glide-fast``: the same, its subscriptions reconciled every 100 ms
  instead of 3 s (``pubsub_reconciliation_interval``), to be fair to it;
* ``ours``: ``trio_websocket.open_redis_pubsub`` (coredis, retries off, our
  own reconnect loop, a ``Gap`` on every lost connection).

The variants (``coredis-get``, ``glide-fast``) publish as their base does,
so the publishing measurements are made for the three base clients only.

Each trial runs in a child process of its own (a hang cannot stall the run;
the child is killed after ``TRIAL_TIMEOUT``), with its own
``redis-server --port N --bind 127.0.0.1 --save '' --appendonly no``. A
publisher publishes numbered messages every ``PUBLISH_EVERY`` seconds, a
subscriber (another connection) reads them; after 50 have arrived the server
is terminated and started again on the same port. Recorded: whether the
subscriber receives a number published after the restart within
``RESUME_WITHIN`` seconds (resumed by itself), whether the application was
told (an item, an exception or the end of its iteration), and how many
messages were lost, duplicated or reordered. Then, against a server left
alone, the publish latency (sequential publishes) and throughput (50 tasks
publishing at once) of each client.

Needs ``redis-server``; a candidate whose library cannot be imported is
skipped with a note. Everything is on 127.0.0.1, every loop is bounded in
count and time. Results: tables on stdout, and in ``results/redis_clients.md``
between its markers (the text around them is kept).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

RESULTS = Path(__file__).parent / "results" / "redis_clients.md"
START_MARK = "<!-- redis_clients.py results: start -->"
END_MARK = "<!-- redis_clients.py results: end -->"
CHANNEL = "stream"
HOST = "127.0.0.1"
PUBLISH_EVERY = 0.002  # seconds between two publishes of the stream
PUBLISH_TIMEOUT = 1.0  # a publish that takes longer is given up (and counted)
BEFORE_RESTART = 50  # messages received before the server is restarted
RESUME_WITHIN = 10.0  # seconds after the restart for the stream to come back
AFTER_RESUME = 0.5  # seconds of stream recorded once it is back
DRAIN = 0.3  # seconds for the last messages to arrive after the publisher stops
TRIAL_TIMEOUT = 45.0  # seconds a child process may take, cleanup included
MAX_PUBLISHES = 50_000
MAX_ITEMS = 100_000

CANDIDATES = {
    "coredis": "coredis, default retry policies, read with `async for`",
    "coredis-get": "coredis, default retry policies, read with `get_message()`",
    "glide": "valkey-glide, default reconnection",
    "glide-fast": "valkey-glide, subscriptions reconciled every 100 ms",
    "ours": "open_redis_pubsub (coredis, retries off, own reconnect loop)",
}
VARIANTS = {"coredis-get", "glide-fast"}
MODULES = {
    "coredis": "coredis",
    "coredis-get": "coredis",
    "glide": "glide",
    "glide-fast": "glide",
    "ours": "trio_websocket",
}


# -- The candidates, as an application uses them --------------------------------


@dataclass
class Session:
    """One candidate's publisher and, for the restart trial, its subscriber.

    ``receive`` returns the next message's number, or a string naming what
    the application was told in the stream (a gap); it raises what the
    library raises, and :exc:`StopAsyncIteration` when its iteration ends.
    """

    publish: Callable[[str], Awaitable[int]]
    receive: Callable[[], Awaitable[int | str]] | None = None
    probe: Callable[[], Awaitable[dict[str, Any]]] | None = None


@asynccontextmanager
async def coredis_session(
    port: int, subscribe: bool, iterate: bool = True
) -> AsyncIterator[Session]:
    import coredis

    publisher: Any = coredis.Redis(host=HOST, port=port)  # default retry policy

    async def publish(text: str) -> int:
        return int(await publisher.publish(CHANNEL, text))

    async with publisher:
        if not subscribe:
            yield Session(publish)
            return
        client: Any = coredis.Redis(host=HOST, port=port)
        async with (
            client,
            client.pubsub(channels=[CHANNEL], ignore_subscribe_messages=True) as pubsub,
        ):
            messages = pubsub.__aiter__()  # as `async for message in pubsub`

            async def receive() -> int | str:
                if iterate:
                    message = await messages.__anext__()
                else:  # coredis-get: `get_message()` again and again instead
                    message = None
                    while message is None:
                        message = await pubsub.get_message()
                return int(message["data"])

            yield Session(publish, receive)


@asynccontextmanager
async def glide_session(
    port: int, subscribe: bool, reconcile_ms: int | None = None
) -> AsyncIterator[Session]:
    from glide import AdvancedGlideClientConfiguration, GlideClient, NodeAddress
    from glide import GlideClientConfiguration as Config

    addresses = [NodeAddress(HOST, port)]
    # The subscriber's connection is subscribed again by a reconciliation
    # task that runs every 3 s unless told otherwise (pubsub_reconciliation_
    # interval); glide-fast runs it every 100 ms.
    advanced = AdvancedGlideClientConfiguration(
        pubsub_reconciliation_interval=reconcile_ms
    )
    publisher = await GlideClient.create(Config(addresses))
    subscriber: Any = None

    async def publish(text: str) -> int:
        return int(await publisher.publish(text, CHANNEL))

    async def receive() -> int | str:
        message = await subscriber.get_pubsub_message()
        return int(message.message)

    async def probe() -> dict[str, Any]:
        # The only state an application could poll: a counter of the Rust
        # core (a disconnection itself is only written to glide's log).
        statistics = await subscriber.get_statistics()
        state = await subscriber.get_subscriptions()
        return {
            "subscription_out_of_sync_count": statistics[
                "subscription_out_of_sync_count"
            ],
            "actual_subscriptions": sorted(
                str(channel)
                for channels in state.actual_subscriptions.values()
                for channel in channels
            ),
        }

    try:
        if not subscribe:
            yield Session(publish)
            return
        modes = {Config.PubSubChannelModes.Exact: {CHANNEL}}
        subscriptions = Config.PubSubSubscriptions(modes, None, None)
        subscriber = await GlideClient.create(
            Config(
                addresses, pubsub_subscriptions=subscriptions, advanced_config=advanced
            )
        )
        yield Session(publish, receive, probe)
    finally:
        with trio.move_on_after(5, shield=True):
            for client in (subscriber, publisher):
                if client is not None:
                    await client.close()


@asynccontextmanager
async def ours_session(port: int, subscribe: bool) -> AsyncIterator[Session]:
    from trio_websocket import Gap, open_redis_pubsub

    async with open_redis_pubsub(port=port) as publisher:

        async def publish(text: str) -> int:
            return await publisher.publish(CHANNEL, text)

        if not subscribe:
            yield Session(publish)
            return
        async with (
            open_redis_pubsub(port=port) as hub,
            hub.subscribe(CHANNEL, max_buffer=MAX_ITEMS) as subscription,
        ):

            async def receive() -> int | str:
                item = await subscription.receive()
                return repr(item) if isinstance(item, Gap) else int(item)

            yield Session(publish, receive)


SESSIONS: dict[str, Callable[[int, bool], Any]] = {
    "coredis": coredis_session,
    "coredis-get": partial(coredis_session, iterate=False),
    "glide": glide_session,
    "glide-fast": partial(glide_session, reconcile_ms=100),
    "ours": ours_session,
}


# -- redis-server ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """A redis-server on one loopback port, which can be stopped and started."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", HOST),
                *("--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def ready(self, limit: float = 5.0) -> None:
        """Return once the server answers PING (within ``limit`` seconds)."""
        with trio.fail_after(limit):
            for _ in range(int(limit / 0.01)):
                try:
                    stream = await trio.open_tcp_stream(HOST, self.port)
                except OSError:
                    await trio.sleep(0.01)
                    continue
                async with stream:
                    await stream.send_all(b"PING\r\n")
                    if (await stream.receive_some(64)).startswith(b"+PONG"):
                        return
                await trio.sleep(0.01)
        raise TimeoutError(f"redis-server on port {self.port} did not answer")

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        for _ in range(500):  # at most 5 s, then killed
            if process.poll() is not None:
                return
            await trio.sleep(0.01)
        process.kill()
        process.wait()


# -- The restart trial (in a child process) --------------------------------------


@dataclass
class Trial:
    started: float = field(default_factory=time.monotonic)
    seq: list[tuple[float, int | str]] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)
    outcomes: list[int | str] = field(default_factory=list)  # per number published
    published_at: list[float] = field(default_factory=list)
    highest: int = -1
    stopping: bool = False
    killed_at: float | None = None
    restarted_at: float | None = None
    first_after_restart: int | None = None
    resumed_at: float | None = None
    probe: dict[str, Any] | None = None

    def now(self) -> float:
        return time.monotonic() - self.started


async def publish_numbers(session: Session, trial: Trial) -> None:
    for number in range(MAX_PUBLISHES):
        if trial.stopping:
            return
        trial.published_at.append(trial.now())
        outcome: int | str = "timeout"
        with trio.move_on_after(PUBLISH_TIMEOUT):
            try:
                outcome = await session.publish(str(number))
            except Exception as exc:
                outcome = type(exc).__name__
        trial.outcomes.append(outcome)
        await trio.sleep(PUBLISH_EVERY)


async def read_stream(session: Session, trial: Trial) -> None:
    assert session.receive is not None
    for _ in range(MAX_ITEMS):
        try:
            item = await session.receive()
        except StopAsyncIteration:
            trial.events.append((trial.now(), "iteration ended"))
            return
        except Exception as exc:
            trial.events.append((trial.now(), describe(exc)))
            return
        trial.seq.append((trial.now(), item))
        if isinstance(item, str):
            trial.events.append((trial.now(), item))
        elif item > trial.highest:
            trial.highest = item
            first = trial.first_after_restart
            if first is not None and item >= first and trial.resumed_at is None:
                trial.resumed_at = trial.now()


def describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"[:100]


async def wait_until(condition: Callable[[], bool], limit: float) -> bool:
    """Whether ``condition()`` became true within ``limit`` seconds."""
    with trio.move_on_after(limit):
        for _ in range(int(limit / 0.005) + 1):
            if condition():
                return True
            await trio.sleep(0.005)
    return condition()


async def run_trial(
    candidate: str, server: RedisServer, trial: Trial, emit: Callable[[], None]
) -> None:
    async with (
        SESSIONS[candidate](server.port, True) as session,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(read_stream, session, trial)
        nursery.start_soon(publish_numbers, session, trial)
        if await wait_until(lambda: len(trial.seq) >= BEFORE_RESTART, 10):
            trial.killed_at = trial.now()
            await server.stop()
            server.start()
            await server.ready()
            trial.restarted_at = trial.now()
            trial.first_after_restart = len(trial.published_at)  # next one
            if await wait_until(lambda: trial.resumed_at is not None, RESUME_WITHIN):
                await trio.sleep(AFTER_RESUME)
        else:
            trial.events.append((trial.now(), "no messages before the restart"))
        trial.stopping = True
        await trio.sleep(DRAIN)
        if session.probe is not None:
            with trio.move_on_after(2):
                trial.probe = await session.probe()
        emit()  # before closing: a close that hangs still leaves a result
        nursery.cancel_scope.cancel()


def analyse(trial: Trial) -> dict[str, Any]:
    numbers = [item for _, item in trial.seq if isinstance(item, int)]
    received = set(numbers)
    killed = trial.killed_at if trial.killed_at is not None else float("inf")
    told = [what for at, what in trial.events if at >= killed]
    last = max(numbers, default=-1)
    first_after = trial.first_after_restart
    resumed = trial.resumed_at is not None
    # Lost: published before the last number received and never received
    # (when the stream did not come back, everything after the restart is).
    end = last if resumed else len(trial.outcomes) - 1
    lost = [n for n in range(min(numbers, default=0), end + 1) if n not in received]
    acknowledged_lost = [
        n
        for n in lost
        if n < len(trial.outcomes)
        and isinstance(trial.outcomes[n], int)
        and trial.outcomes[n] > 0
    ]
    # A jump in the numbers with no gap item between them: a silent loss.
    unmarked = 0
    previous: int | str | None = None
    for _, item in trial.seq:
        if isinstance(item, int) and isinstance(previous, int) and item > previous + 1:
            unmarked += 1
        previous = item
    errors: dict[str, int] = {}
    for outcome in trial.outcomes:
        if isinstance(outcome, str):
            errors[outcome] = errors.get(outcome, 0) + 1
    restarted = trial.restarted_at
    return {
        "restarted": restarted is not None,
        "resumed": resumed,
        "resume_s": (
            trial.resumed_at - restarted if resumed and restarted is not None else None
        ),
        "told": told,
        "events": [what for _, what in trial.events][:5],
        "published": len(trial.outcomes),
        "received": len(numbers),
        "lost": len(lost),
        "acknowledged_lost": len(acknowledged_lost),
        "unmarked_jumps": unmarked,
        "duplicated": len(numbers) - len(received),
        "reordered": sum(1 for a, b in itertools.pairwise(numbers) if b < a),
        "publish_errors": errors,
        "published_to_none": sum(1 for o in trial.outcomes if o == 0),
        "publisher_resumed": any(
            isinstance(o, int) and o > 0 for o in trial.outcomes[first_after or 0 :]
        )
        if first_after is not None
        else False,
        "probe": trial.probe,
        "down_s": restarted - killed if restarted is not None else None,
    }


async def restart_child(candidate: str) -> None:
    server = RedisServer(free_port())
    server.start()
    trial = Trial()

    def emit(**extra: Any) -> None:
        print(json.dumps({**analyse(trial), **extra}), flush=True)

    try:
        await server.ready()
        trial.started = time.monotonic()
        opened = time.monotonic()
        try:
            await run_trial(candidate, server, trial, emit)
        except BaseException as exc:  # what leaving the session raised
            if not isinstance(exc, Exception | BaseExceptionGroup):
                raise
            trial.events.append((trial.now(), "raised " + describe(exc)))
        emit(closed=True, total_s=time.monotonic() - opened)
    finally:
        await server.stop()


# -- Publish latency and throughput (in a child process) -------------------------


async def perf_child(candidate: str, sequential: int, tasks: int, each: int) -> None:
    server = RedisServer(free_port())
    server.start()
    try:
        await server.ready()
        async with SESSIONS[candidate](server.port, False) as session:
            with trio.fail_after(60):
                for n in range(200):  # warm-up: connections, code paths
                    await session.publish(str(n))
                latencies: list[float] = []
                began = time.perf_counter()
                for n in range(sequential):
                    sent = time.perf_counter()
                    await session.publish(str(n))
                    latencies.append(time.perf_counter() - sent)
                rate = sequential / (time.perf_counter() - began)

                async def publish_some() -> None:
                    for n in range(each):
                        await session.publish(str(n))

                began = time.perf_counter()
                async with trio.open_nursery() as nursery:
                    for _ in range(tasks):
                        nursery.start_soon(publish_some)
                throughput = tasks * each / (time.perf_counter() - began)
            latencies.sort()
            result = {
                "sequential_per_s": rate,
                "p50_us": latencies[len(latencies) // 2] * 1e6,
                "p99_us": latencies[int(len(latencies) * 0.99)] * 1e6,
                "concurrent_per_s": throughput,
            }
            print(json.dumps(result), flush=True)
    finally:
        await server.stop()


# -- A cancelled wait for a glide message (in a child process) -------------------


async def glide_cancel_child() -> None:
    """Does a ``get_pubsub_message()`` cancelled by a timeout lose a message?

    Under Trio, glide's waiter is a future that a cancellation leaves in its
    queue of waiters; the next message may be handed to it, and lost.
    """
    server = RedisServer(free_port())
    server.start()
    try:
        await server.ready()
        async with glide_session(server.port, True) as session:
            assert session.receive is not None
            with trio.move_on_after(0.1):  # nothing is published: times out
                await session.receive()
            for number in range(3):
                await session.publish(str(number))
            received = []
            with trio.move_on_after(1):
                for _ in range(3):
                    item = await session.receive()
                    received.append(item)
            print(json.dumps({"published": [0, 1, 2], "received": received}))
    finally:
        await server.stop()


# -- The runner ------------------------------------------------------------------


def run_child(arguments: list[str]) -> tuple[dict[str, Any] | None, str]:
    """Run this script in a child process; its last JSON line, and its stderr."""
    process = subprocess.Popen(
        [sys.executable, __file__, "--child", *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its redis-server too is killed with its group
    )
    try:
        out, err = process.communicate(timeout=TRIAL_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        err += f"\n(killed after {TRIAL_TIMEOUT:.0f} s)"
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return (json.loads(lines[-1]) if lines else None), err


def version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine() -> str:
    redis = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout.split()
    redis_version = next((w[2:] for w in redis if w.startswith("v=")), "?")
    packages = ", ".join(
        f"{name} {version(name)}"
        for name in ("trio", "anyio", "coredis", "valkey-glide", "trio-websocket")
    )
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; redis-server {redis_version}; "
        f"{packages}; {our_source()}"
    )


def our_source() -> str:
    """Where ``trio_websocket`` was imported from, and which commit it is."""
    spec = importlib.util.find_spec("trio_websocket")
    if spec is None or spec.origin is None:
        return "trio_websocket not importable"
    package = Path(spec.origin).parent

    def git(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "-C", str(package), *arguments],
            capture_output=True,
            text=True,
            check=False,
        )

    commit = git("rev-parse", "--short", "HEAD").stdout.strip()
    if not commit:
        return f"trio_websocket from {package}"
    changed = git("diff", "--name-only", "--relative", "HEAD", "--", ".").stdout.split()
    state = f"uncommitted changes in {', '.join(changed)}" if changed else "unchanged"
    return f"trio_websocket from {package} (commit {commit}, {state})"


def told_kind(what: list[str]) -> str:
    if not what:
        return "nothing"
    first = what[0]
    return first.split(":")[0] if not first.startswith("Gap(") else first


def trial_row(index: int, result: dict[str, Any] | None, err: str) -> str:
    if result is None:
        reason = err.strip().splitlines()[-1] if err.strip() else "no result"
        return f"| {index} | – | – | – | – | – | – | – | {reason[:80]} |"
    resumed = f"yes, {result['resume_s']:.2f} s" if result["resumed"] else "**no**"
    if not result["restarted"]:
        resumed = "not restarted"
    notes = []
    if result["publish_errors"]:
        notes.append(
            "publish errors "
            + ", ".join(f"{k} ×{v}" for k, v in result["publish_errors"].items())
        )
    if not result.get("closed"):
        notes.append("closing hung (child killed)")
    if result["probe"]:
        notes.append(f"probe {result['probe']}")
    if result["published_to_none"]:
        notes.append(f"{result['published_to_none']} published to no subscriber")
    if not result["restarted"]:
        notes.append("; ".join(result["events"]))
    if result["restarted"] and not result["publisher_resumed"]:
        notes.append("publisher did not resume")
    lost = str(result["lost"]) if result["resumed"] else f"{result['lost']} (rest)"
    return (
        f"| {index} | {resumed} | {told_kind(result['told'])} | {lost} | "
        f"{result['acknowledged_lost']} | {result['unmarked_jumps']} | "
        f"{result['duplicated']} | {result['reordered']} | {'; '.join(notes)} |"
    )


def told_summary(
    told: list[dict[str, Any]], results: list[dict[str, Any] | None]
) -> str:
    kinds = sorted({told_kind(r["told"]).split("(")[0] for r in told})
    return f"{len(told)}/{len(results)}" + (f" ({', '.join(kinds)})" if kinds else "")


def summary_row(name: str, results: list[dict[str, Any] | None]) -> str:
    done = [r for r in results if r is not None and r["restarted"]]
    resumed = [r for r in done if r["resumed"]]
    told = [r for r in done if r["told"]]
    times = [r["resume_s"] for r in resumed]
    lost = [r["lost"] for r in resumed]
    passes = len(resumed) == len(told) == len(results) and all(
        r["told"] and r["resumed"] for r in done
    )
    span = (
        f"{statistics.median(times):.2f} ({min(times):.2f}–{max(times):.2f})"
        if times
        else "–"
    )
    lost_span = (
        f"{statistics.median(lost):g} ({min(lost)}–{max(lost)})" if lost else "–"
    )
    return (
        f"| {name} | {len(resumed)}/{len(results)} | {told_summary(told, results)} | "
        f"{span} | {lost_span} | {sum(r['acknowledged_lost'] for r in done)} | "
        f"{sum(r['unmarked_jumps'] for r in done)} | "
        f"{sum(r['duplicated'] for r in done)} | "
        f"{sum(r['reordered'] for r in done)} | {'**yes**' if passes else 'no'} |"
    )


def report(
    setting: str,
    trials: dict[str, list[tuple[dict[str, Any] | None, str]]],
    perf: dict[str, dict[str, Any] | None],
    skipped: dict[str, str],
    seconds: float,
) -> str:
    lines = [
        f"Machine: {setting}.",
        f"Run: {max(map(len, trials.values()), default=0)} restart trials per "
        f"candidate, {seconds:.0f} s in all; a message every "
        f"{PUBLISH_EVERY * 1000:g} ms, restart after {BEFORE_RESTART} received, "
        f"resumed = a number published after the restart arrives within "
        f"{RESUME_WITHIN:g} s.",
        "",
        "### Restart mid-stream: summary",
        "",
        "| candidate | resumed | told | resume s, median (range) | lost, median "
        "(range) | acked but lost | silent jumps | duplicated | reordered | passes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, results in trials.items():
        lines.append(summary_row(name, [r for r, _ in results]))
    for name, reason in skipped.items():
        lines.append(f"| {name} | skipped: {reason} | | | | | | | | |")
    for name, results in trials.items():
        lines += [
            "",
            f"### {name}: {CANDIDATES[name]}",
            "",
            "| trial | resumed | told | lost | acked but lost | silent jumps "
            "| duplicated | reordered | notes |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        lines += [trial_row(i + 1, r, e) for i, (r, e) in enumerate(results)]
        stderr = [e for _, e in results if "disconnect" in e.lower()]
        if stderr:
            lines.append("")
            lines.append(
                f"stderr of {len(stderr)} trial(s) mentions a disconnection, e.g. "
                f"`{next(iter(stderr)).strip().splitlines()[0][:150]}`"
            )
    lines += [
        "",
        "### Publishing, server left alone",
        "",
        "Medians of the rounds (range): "
        + f"{max((r.get('rounds', 0) for r in perf.values() if r), default=0)} "
        + "rounds, each in a new process after 200 warm-up publishes, the order "
        + "rotated. Publishes go to a channel without subscribers.",
        "",
        "| candidate | sequential publishes/s | p50 µs | p99 µs | 50 tasks: "
        "publishes/s |",
        "|---|---|---|---|---|",
    ]
    for name, result in perf.items():
        if result is None:
            lines.append(f"| {name} | failed | | | |")
            continue
        cells = [
            f"{result[key]:,.0f} ({result[key + '_range'][0]:,.0f}–"
            f"{result[key + '_range'][1]:,.0f})"
            for key in ("sequential_per_s", "p50_us", "p99_us", "concurrent_per_s")
        ]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(lines)


def combine(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Medians over the rounds of each measurement, and their ranges."""
    if not results:
        return None
    combined: dict[str, Any] = {"rounds": len(results)}
    for key in results[0]:
        values = [result[key] for result in results]
        combined[key] = statistics.median(values)
        combined[key + "_range"] = (min(values), max(values))
    return combined


def write_results(path: Path, text: str) -> None:
    block = f"{START_MARK}\n{text}\n{END_MARK}"
    old = path.read_text() if path.exists() else ""
    if START_MARK in old and END_MARK in old:
        head, rest = old.split(START_MARK, 1)
        new = head + block + rest.split(END_MARK, 1)[1]
    else:
        new = f"# Redis clients under Trio\n\n{block}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5, choices=range(1, 21))
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--sequential", type=int, default=2000)
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--each", type=int, default=200, help="publishes per task")
    parser.add_argument("--rounds", type=int, default=3, choices=range(1, 11))
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, candidate = args.child[0], args.child[1]
        if mode == "restart":
            trio.run(restart_child, candidate)
        elif mode == "cancel":
            trio.run(glide_cancel_child)
        else:
            trio.run(perf_child, candidate, args.sequential, args.tasks, args.each)
        return
    if shutil.which("redis-server") is None:
        sys.exit("redis-server not found: install it (apt-get install redis-server)")
    began = time.monotonic()
    setting = machine()  # before the run: the code measured is this one
    setting += f"; load average {os.getloadavg()[0]:.1f} at the start"
    skipped: dict[str, str] = {}
    names = []
    for name in args.candidates.split(","):
        if name not in CANDIDATES:
            sys.exit(f"unknown candidate {name!r}; known: {', '.join(CANDIDATES)}")
        if importlib.util.find_spec(MODULES[name]) is None:
            skipped[name] = f"`import {MODULES[name]}` fails with {sys.executable}"
            print(f"skipping {name}: {skipped[name]}", flush=True)
        else:
            names.append(name)
    trials: dict[str, list[tuple[dict[str, Any] | None, str]]] = {n: [] for n in names}
    for index in range(args.trials):
        shift = index % max(len(names), 1)  # rotate the order on each trial
        for name in names[shift:] + names[:shift]:
            result, err = run_child(["restart", name])
            trials[name].append((result, err))
            print(f"trial {index + 1} {name}: {trial_row(index + 1, result, err)}")
    publishers = [name for name in names if name not in VARIANTS]
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in publishers}
    for index in range(args.rounds):  # the order rotated on each round
        shift = index % max(len(publishers), 1)
        for name in publishers[shift:] + publishers[:shift]:
            result, err = run_child(["perf", name])
            if result is None:
                print(f"perf {name} failed: {err.strip()[-300:]}", flush=True)
            else:
                rounds[name].append(result)
    perf = {name: combine(results) for name, results in rounds.items()}
    cancel = None
    if "glide" in names:
        cancel, err = run_child(["cancel", "glide"])
    setting += f", {os.getloadavg()[0]:.1f} at the end"
    text = report(setting, trials, perf, skipped, time.monotonic() - began)
    if cancel is not None:
        text += (
            "\n\nglide, a `get_pubsub_message()` cancelled by a 0.1 s timeout, "
            f"then 3 messages published: received {cancel['received']} of "
            f"{cancel['published']}."
        )
    print(text)
    write_results(args.output, text)
    print(f"\nwritten to {args.output}")


if __name__ == "__main__":
    main()
