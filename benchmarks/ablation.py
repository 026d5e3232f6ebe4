"""Ablation of our hand-written primitives: ``python benchmarks/ablation.py``.

Runs workloads of ``run.py`` against our library as is and against variants
of it, each with one piece put back to what Trio offers:

* ``parking_lot``: ``trio.lowlevel.ParkingLot`` in place of ``Waiters``;
* ``trio_lock``: ``trio.Lock`` (taken with ``await lock.acquire()``, as
  ``async with`` does) in place of ``WriteLock``;
* ``trio_lock_nowait``: ``trio.Lock`` with ``WriteLock``'s fast path kept: a
  free lock is taken with ``acquire_nowait()``, no checkpoint (which tells
  the lock's data structure from the checkpoint it saves);
* ``channel_queue``: a queue on ``trio.open_memory_channel`` in place of
  ``MessageQueue`` (same limits and flow control, Trio's channel underneath);
* ``no_turns``: turn-taking off, the reader task always reads the socket and
  consumers only wait on the queue.

The variants are made in the agent processes only, by replacing the names
the library looks up (``_connection.WriteLock``, ``_connection.ReadTurns``,
...) with the adapters below before the first connection: the library's own
files stay as they are. Every variant runs in its own agent process of the
``ours`` environment; the order rotates on each repeat and each ratio is
taken within one repeat. Results: ``results/ablation.md`` and ``.json``.
See ``README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
AGENTS_DIR = BENCH_DIR / "agents"

VARIANTS = {
    "ours": "this library as is",
    "parking_lot": "trio.lowlevel.ParkingLot for Waiters",
    "trio_lock": "trio.Lock for WriteLock",
    "trio_lock_nowait": "trio.Lock for WriteLock, free lock taken without a checkpoint",
    "channel_queue": "memory channel for MessageQueue",
    "no_turns": "turn-taking off",
}

# What each variant takes away, for the report.
REPLACED = {
    "parking_lot": "`Waiters` (queue consumers and reader, lock waiters)",
    "trio_lock": "`WriteLock` (write lock, message lock)",
    "trio_lock_nowait": "`WriteLock`, but keeps its free-lock fast path",
    "channel_queue": "`MessageQueue` (reader → application)",
    "no_turns": "`ReadTurns` (consumers reading the socket themselves)",
}

# handshake_50 is left out: the primitives do not change a handshake (a
# first run measured medians of 0.92 to 1.06, all ranges across 1).
SCENARIOS = ["latency_text16", "pipelined16", "fanin100", "bulk1m", "memory_idle"]


# -- Inside an agent: the variants ---------------------------------------------


def install(variant: str) -> None:
    """Swap one of our primitives for Trio's in this process."""
    if variant == "ours":
        return
    import trio
    from trio_websocket import _connection, _locks, _queue

    if variant == "parking_lot":
        # Same API: park(), unpark(), unpark_all(), len().
        _locks.Waiters = trio.lowlevel.ParkingLot
        _queue.Waiters = trio.lowlevel.ParkingLot
    elif variant == "trio_lock":
        _connection.WriteLock = _trio_lock_class(fast_path=False)
    elif variant == "trio_lock_nowait":
        _connection.WriteLock = _trio_lock_class(fast_path=True)
    elif variant == "channel_queue":
        _connection.MessageQueue = _channel_queue_class()
    elif variant == "no_turns":
        # The connection reads with turns only if it has a ReadTurns.
        _connection.ReadTurns = lambda reader_needed: None
    else:
        raise ValueError(f"unknown variant {variant!r}")


def _trio_lock_class(*, fast_path: bool) -> type:
    import trio

    class TrioLock:
        """``WriteLock``'s interface on a ``trio.Lock``. Without
        ``fast_path``, used as Trio code would: every acquisition is ``await
        lock.acquire()``, a checkpoint even when the lock is free."""

        __slots__ = ("_lock",)

        def __init__(self) -> None:
            self._lock = trio.Lock()

        def locked(self) -> bool:
            return self._lock.locked()

        def try_acquire(self) -> bool:
            if not fast_path:
                return False  # so the caller takes the lock with acquire()
            try:
                self._lock.acquire_nowait()
            except trio.WouldBlock:
                return False
            return True

        async def wait_for_handover(self) -> None:
            await self._lock.acquire()

        def release(self) -> None:
            self._lock.release()

        async def __aenter__(self) -> None:
            if not self.try_acquire():
                await self._lock.acquire()

        async def __aexit__(self, *exc_info: object) -> None:
            self._lock.release()

    return TrioLock


def _channel_queue_class() -> type:
    import math

    import trio
    from trio_websocket import _queue

    overhead = _queue._ITEM_OVERHEAD

    class ChannelQueue:
        """``MessageQueue``'s interface and limits on a memory channel.

        The channel is unbounded and carries ``(item, size)``; the counts that
        decide the reader's room are kept here as in ``MessageQueue``, an
        item counting until the consumer that receives it has run. The reader
        parks on a ``ParkingLot``.
        """

        def __init__(self, max_items: float, max_bytes: int) -> None:
            self._send, self._receive = trio.open_memory_channel[tuple[Any, int]](
                math.inf
            )
            self._max_items = max_items
            self._max_bytes = max_bytes
            self._count = 0
            self._bytes = 0
            self._waiting = 0
            self._reader = trio.lowlevel.ParkingLot()
            self._closed = False

        def __len__(self) -> int:
            return self._count

        @property
        def queued_bytes(self) -> int:
            return self._bytes

        def put(self, item: Any, size: int) -> None:
            try:
                self._send.send_nowait((item, size))
            except trio.ClosedResourceError:
                return  # closed: nobody will read it
            self._count += 1
            self._bytes += size

        @property
        def has_waiter_without_item(self) -> bool:
            return self._waiting > self._count

        @property
        def has_item_for_every_waiter(self) -> bool:
            return 0 < self._waiting <= self._count

        def has_room(self) -> bool:
            count = self._count
            if count < self._max_items + self._waiting:
                return True
            return self._bytes + count * overhead < self._max_bytes

        async def wait_for_room(self) -> None:
            while not self._closed and not self.has_room():
                await self._reader.park()

        def _taken(self, pair: tuple[Any, int]) -> Any:
            item, size = pair
            self._count = max(0, self._count - 1)
            self._bytes = max(0, self._bytes - size)
            self._wake_reader_if_room()
            return item

        def get_nowait(self) -> Any:
            try:
                pair = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                return None
            return self._taken(pair)

        async def get(self) -> Any:
            item = self.get_nowait()
            if item is not None or self._closed:
                return item
            self._waiting += 1
            try:
                self._wake_reader_if_room()
                pair = await self._receive.receive()
            except trio.EndOfChannel:
                return None
            finally:
                self._waiting -= 1
            return self._taken(pair)

        def close(self, *, discard: bool) -> None:
            self._closed = True
            self._send.close()
            if discard:
                while self.get_nowait() is not None:
                    pass
                self._count = self._bytes = 0
            self._reader.unpark_all()

        def _wake_reader_if_room(self) -> None:
            if self._reader and self.has_room():
                self._reader.unpark()

    return ChannelQueue


def agent_main(variant: str) -> None:
    """``ablation.py --agent VARIANT``: ``trio_agent.py`` with the variant."""
    # The agents' modules, and not this directory, whose profile.py would
    # shadow the standard library's (cProfile imports it).
    sys.path[0] = str(AGENTS_DIR)
    install(variant)
    import trio
    import trio_agent

    trio.run(trio_agent.main, "trio_websocket")


# -- The runner ------------------------------------------------------------------


def log(message: str) -> None:
    print(message, flush=True)


def export_commit(commit: str, into: Path) -> str:
    """The library's files at ``commit``, for the agents' PYTHONPATH."""
    repo = BENCH_DIR.parent
    sha = subprocess.run(
        ["git", "rev-parse", "--short", commit],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "archive", sha, "trio_websocket"],
        cwd=repo,
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return sha


def cpu_seconds(pid: int) -> float:
    """CPU time used so far by every thread of process ``pid`` (Linux)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, IndexError, ValueError):  # it ended
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def summary(values: list[float]) -> tuple[float, float, float] | None:
    if not values:
        return None
    return statistics.median(values), min(values), max(values)


def cell(values: list[float], digits: int) -> str:
    result = summary(values)
    if result is None:
        return "–"
    median, low, high = result

    def number(value: float) -> str:
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.{digits}f}"

    if low == high:
        return number(median)
    return f"{number(median)} ({number(low)}–{number(high)})"


def report(data: dict[str, Any], notes: str) -> str:
    """The markdown of ``results/ablation.md`` (``notes``: kept as is)."""
    meta, rows = data["meta"], data["measurements"]
    variants = meta["variants"]
    by_key: dict[tuple[str, str, str], dict[int, dict[str, Any]]] = {}
    for row in rows:
        key = (row["mode"], row["scenario"], row["peer"])
        by_key.setdefault(key, {})[row["repeat"]] = row

    def values(mode: str, scenario: str, variant: str) -> list[float]:
        return [m["value"] for m in by_key.get((mode, scenario, variant), {}).values()]

    def cpu_values(mode: str, scenario: str, variant: str) -> list[float]:
        rows = by_key.get((mode, scenario, variant), {}).values()
        return [
            m["extra"]["cpu_us_per_msg"] for m in rows if "cpu_us_per_msg" in m["extra"]
        ]

    def metric(row: dict[str, Any], cpu: bool) -> float | None:
        if cpu:
            value: float | None = row["extra"].get("cpu_us_per_msg")
            return value
        return float(row["value"])

    def ratios(
        mode: str, scenario: str, variant: str, *, cpu: bool = False
    ) -> list[float]:
        """ours ÷ variant per repeat; for memory and CPU, variant ÷ ours
        (either way: above 1 is what ours buys)."""
        ours = by_key.get((mode, scenario, "ours"), {})
        other = by_key.get((mode, scenario, variant), {})
        lower_is_better = cpu or scenario == "memory_idle"
        result = []
        for repeat, row in other.items():
            if repeat not in ours:
                continue
            a, b = metric(ours[repeat], cpu), metric(row, cpu)
            if a and b:
                result.append(b / a if lower_is_better else a / b)
        return result

    def ratio_row(scenario: str, mode: str, cpu: bool) -> str:
        cells = []
        for variant in variants[1:]:
            found = ratios(mode, scenario, variant, cpu=cpu)
            wins = sum(ratio > 1 for ratio in found)
            cells.append(f"{cell(found, 2)}, {wins}/{len(found)}")
        return f"| {scenario} | " + " | ".join(cells) + " |"

    lines = [
        "# Ablation: what each hand-written primitive buys",
        "",
        f"Run: `{meta['command']}` on {meta['date']}, {meta['duration']:.0f} s, "
        f"library at {meta['source']}.",
        f"Machine: {meta['machine']}. Settings: {meta['settings']}.",
        f"Load average (1 min): {meta.get('load', 'not recorded')}.",
        "",
        "Each variant is our library with one piece replaced by Trio's "
        "(adapters in `benchmarks/ablation.py`, installed in the agent "
        "process only):",
        "",
    ]
    for variant in variants:
        if variant != "ours":
            lines.append(
                f"- `{variant}`: {VARIANTS[variant]}; replaces {REPLACED[variant]}"
            )
    lines += [
        "",
        "The CPU time is that of the process under test during the whole "
        "measurement (connecting and warm-up included) divided by the timed "
        "messages (MiB for bulk1m): it varies much less than wall time when "
        "other processes share the cores.",
        "",
        "**ours ÷ variant** is taken per repeat (all variants ran back to back, "
        "the order rotated) and given as median (min–max): above 1 is what our "
        "primitive buys on that workload, below 1 what it costs. For memory "
        "the ratio is variant ÷ ours (above 1: ours uses less). After the "
        "comma: in how many repeats ours did better (a sign test: on a noisy "
        "machine 9/11 or more is not chance, p < 0.07).",
        "",
    ]
    for mode in meta["modes"]:
        title = "Server" if mode == "server" else "Client"
        header = "| Scenario | " + " | ".join(f"`{v}`" for v in variants[1:]) + " |"
        rule = "|---|" + "---|" * (len(variants) - 1)
        lines += [
            f"## {title} under test",
            "",
            "Speed (or memory), ours ÷ variant:",
            "",
            header,
            rule,
        ]
        for scenario in meta["scenarios"]:
            lines.append(ratio_row(scenario, mode, cpu=False))
        timed = [s for s in meta["scenarios"] if s != "memory_idle"]
        lines += [
            "",
            "CPU time of the process under test per message, variant ÷ ours "
            "(above 1: ours uses less CPU), with in how many repeats ours used "
            "less:",
            "",
            header,
            rule,
        ]
        lines += [ratio_row(scenario, mode, cpu=True) for scenario in timed]
        lines += [
            "",
            "Absolute values (median (min–max) over repeats):",
            "",
            "| Scenario | unit | " + " | ".join(f"`{v}`" for v in variants) + " |",
            "|---|---|" + "---|" * len(variants),
        ]
        for scenario in meta["scenarios"]:
            unit = meta["units"][scenario]
            cells = [cell(values(mode, scenario, v), 1) for v in variants]
            lines.append(f"| {scenario} | {unit} | " + " | ".join(cells) + " |")
        for scenario in timed:
            cells = [cell(cpu_values(mode, scenario, v), 1) for v in variants]
            lines.append(f"| {scenario} CPU | µs/msg | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n" + notes


def main(argv: list[str]) -> int:
    if argv[:1] == ["--agent"]:
        agent_main(argv[1])
        return 0
    sys.path.insert(0, str(BENCH_DIR))
    from run import machine

    import harness.orchestrate as orchestrate
    from harness.agents import Agent, PeerSpec
    from harness.envs import ensure
    from harness.scenarios import BY_KEY, Settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--modes", default="server,client")
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--memory-repeats", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument(
        "--commit",
        help="measure the library at this commit (git archive) instead of "
        "the working tree",
    )
    parser.add_argument("--name", default="ablation", help="results/NAME.{md,json}")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite results/NAME.md from results/NAME.json, measuring nothing",
    )
    args = parser.parse_args(argv)
    out = BENCH_DIR / "results"
    if args.report_only:
        write_report(
            json.loads((out / f"{args.name}.json").read_text()), out, args.name
        )
        return 0
    variants = ["ours"] + [v for v in args.variants.split(",") if v and v != "ours"]
    for variant in variants:
        if variant not in VARIANTS:
            parser.error(f"unknown variant {variant!r}")
    scenarios = [BY_KEY[key] for key in args.scenarios.split(",")]
    modes = [mode for mode in args.modes.split(",") if mode]
    settings = Settings(
        seconds=args.seconds,
        repeats=args.repeats,
        memory_repeats=args.memory_repeats,
        warmup=100,
    )
    ensure(["ours", "fixed"], False, log)

    peers = [PeerSpec(v, VARIANTS[v], "ours", "trio_websocket", "ws") for v in variants]

    def variant_agent(peer: PeerSpec, mode: str) -> Agent:
        return Agent(
            f"{mode}-ablation-{peer.key}",
            peer.env,
            [str(Path(__file__).resolve()), "--agent", peer.key],
        )

    orchestrate.peer_agent = variant_agent  # the harness starts our agents
    measure = orchestrate.measure

    def measure_cpu(
        run: Any, peer: PeerSpec, scenario: Any, settings: Settings
    ) -> tuple[float, dict[str, Any]]:
        """The harness's measurement, plus the CPU time it took in the process
        under test: much less disturbed than wall time by the other
        processes on a shared machine."""
        pid = run.peers[peer.key].pid
        before = cpu_seconds(pid)
        value, extra = measure(run, peer, scenario, settings)
        used = cpu_seconds(pid) - before
        if "cpu_us" in extra:  # the harness measures it too
            extra["cpu_us_per_msg"] = extra["cpu_us"]
        elif scenario.workload != "memory" and extra.get("count"):
            extra["cpu_us_per_msg"] = used * 1e6 / extra["count"]
        return value, extra

    orchestrate.measure = measure_cpu

    with tempfile.TemporaryDirectory(prefix="ablation-") as tmp:
        source = "the working tree"
        if args.commit:
            sha = export_commit(args.commit, Path(tmp))
            os.environ["PYTHONPATH"] = tmp  # inherited by the agents
            source = f"commit {sha}"
        start = time.perf_counter()
        load_start = os.getloadavg()[0]
        results = []
        for mode in modes:
            log(f"mode: {mode} under test")
            run = orchestrate.start_mode(mode, peers)
            try:
                paths = {info["path"] for info in run.info.values() if "path" in info}
                log(f"  library: {', '.join(sorted(paths))}")
                results += orchestrate.run_scenarios(
                    run, peers, scenarios, settings, log
                )
            finally:
                run.close()
        duration = time.perf_counter() - start
    log(f"measured in {duration:.0f} s")

    meta = {
        "command": "python benchmarks/ablation.py " + " ".join(argv),
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "duration": duration,
        "machine": machine(),
        "source": source,
        "load": f"{load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end",
        "settings": f"{args.seconds} s per measurement, {args.repeats} repeats "
        f"({args.memory_repeats} for memory), 100 warm-up round trips",
        "variants": variants,
        "modes": modes,
        "scenarios": [s.key for s in scenarios],
        "units": {s.key: s.unit for s in scenarios},
    }
    data = {"meta": meta, "measurements": [dataclasses.asdict(m) for m in results]}
    (out / f"{args.name}.json").write_text(json.dumps(data, indent=1))
    write_report(data, out, args.name)
    return 0


def write_report(data: dict[str, Any], out: Path, name: str) -> None:
    md_path = out / f"{name}.md"
    # Everything from the "## Conclusions" heading on is written by hand and kept.
    notes = ""
    if md_path.exists():
        text = md_path.read_text()
        if "\n## Conclusions" in text:
            notes = text[text.index("\n## Conclusions") + 1 :]
    md_path.write_text(report(data, notes))
    log(f"wrote {md_path}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
