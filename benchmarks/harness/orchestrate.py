"""Running the scenarios: peers back to back, order rotated, repeated.

Two modes. In ``server`` mode each peer runs an echo server and the fixed peer
drives the workload as the client; in ``client`` mode the fixed peer runs the
echo servers and each peer drives the workload. Either way the fixed peer is
the same process for every peer in the round, so only the side under test
differs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .agents import PEERS, Agent, PeerSpec, fixed_agent, peer_agent
from .scenarios import Scenario, Settings, workload_params

HOST = "127.0.0.1"
MODES = ("server", "client")


@dataclass
class Measurement:
    mode: str
    scenario: str
    peer: str
    repeat: int
    value: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModeRun:
    """The agents of one mode and the ports their echo servers listen on."""

    mode: str
    fixed: Agent
    peers: dict[str, Agent]
    compression: dict[str, bool]
    info: dict[str, dict[str, Any]]
    ports: dict[tuple[str, str, bool], int] = field(default_factory=dict)

    def close(self) -> None:
        for agent in [*self.peers.values(), self.fixed]:
            agent.close()


def start_mode(mode: str, peers: list[PeerSpec]) -> ModeRun:
    fixed = fixed_agent(mode)
    run = ModeRun(mode, fixed, {}, {}, {"fixed": fixed.call("hello")["info"]})
    try:
        for peer in peers:
            agent = run.peers[peer.key] = peer_agent(peer, mode)
            hello = agent.call("hello")
            run.info[peer.key] = hello["info"]
            run.compression[peer.key] = hello["compression"]
        if mode == "server":
            for peer in peers:
                for compression in {False, run.compression[peer.key]}:
                    reply = run.peers[peer.key].call(
                        "serve", host=HOST, compression=compression
                    )
                    run.ports[(peer.key, peer.proto, compression)] = reply["port"]
        else:
            for proto, compression in (("ws", False), ("ws", True), ("plain", False)):
                reply = fixed.call(
                    "serve", host=HOST, proto=proto, compression=compression
                )
                run.ports[("fixed", proto, compression)] = reply["port"]
    except BaseException:
        run.close()
        raise
    return run


def _target(run: ModeRun, peer: PeerSpec, compression: bool) -> dict[str, Any]:
    owner = peer.key if run.mode == "server" else "fixed"
    port = run.ports[(owner, peer.proto, compression)]
    return {"host": HOST, "port": port, "proto": peer.proto, "compression": compression}


def _timeout(settings: Settings) -> float:
    return 60 + 20 * settings.seconds


def measure_memory(
    run: ModeRun, peer: PeerSpec, scenario: Scenario, settings: Settings
) -> tuple[float, dict[str, Any]]:
    """KiB per idle connection in the process under test (tracemalloc delta)."""
    under_test = run.peers[peer.key]
    opener = run.fixed if run.mode == "server" else under_test
    count = scenario.params["count"]
    before = under_test.call("mem_start")
    try:
        opener.call(
            "hold", count=count, timeout=_timeout(settings), **_target(run, peer, False)
        )
        time.sleep(0.3)  # let the side under test finish what the handshakes started
        after = under_test.call("mem")
        opener.call("release", timeout=_timeout(settings))
    finally:
        under_test.call("mem_stop")
    traced = (after["traced"] - before["traced"]) / count / 1024
    rss = (after["rss"] - before["rss"]) / count / 1024
    return traced, {"rss_kib": rss}


def cpu_seconds(pid: int) -> float:
    """CPU time used so far by every thread of process ``pid`` (Linux; 0
    elsewhere)."""
    total = 0
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, IndexError, ValueError):  # it ended
                total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def measure(
    run: ModeRun, peer: PeerSpec, scenario: Scenario, settings: Settings
) -> tuple[float, dict[str, Any]]:
    """One measurement; its result also tells the CPU time the process under
    test used per operation (``cpu_us``), which the machine's other load
    disturbs far less than a rate."""
    if scenario.workload == "memory":
        return measure_memory(run, peer, scenario, settings)
    driver = run.fixed if run.mode == "server" else run.peers[peer.key]
    under_test = run.peers[peer.key].pid
    before = cpu_seconds(under_test)
    reply = driver.call(
        "run",
        workload=scenario.workload,
        params=workload_params(scenario, settings),
        timeout=_timeout(settings),
        **_target(run, peer, scenario.compression),
    )
    result: dict[str, Any] = reply["result"]
    if result.get("count"):
        result["cpu_us"] = (cpu_seconds(under_test) - before) * 1e6 / result["count"]
    return result[scenario.metric], result


def applicable(run: ModeRun, peer: PeerSpec, scenario: Scenario) -> bool:
    return not scenario.compression or run.compression[peer.key]


def run_scenarios(
    run: ModeRun,
    peers: list[PeerSpec],
    scenarios: list[Scenario],
    settings: Settings,
    log: Callable[[str], None],
) -> list[Measurement]:
    """Every scenario: ``repeats`` rounds of all peers, the order rotated."""
    results: list[Measurement] = []
    for index, scenario in enumerate(scenarios):
        active = [peer for peer in peers if applicable(run, peer, scenario)]
        repeats = (
            settings.memory_repeats
            if scenario.workload == "memory"
            else settings.repeats
        )
        for repeat in range(repeats):
            shift = (index + repeat) % len(active) if active else 0
            for peer in active[shift:] + active[:shift]:
                value, extra = measure(run, peer, scenario, settings)
                results.append(
                    Measurement(run.mode, scenario.key, peer.key, repeat, value, extra)
                )
        log(f"  {run.mode:6} {scenario.key:15} done")
    return results


def profile(
    run: ModeRun, peer: PeerSpec, scenario: Scenario, settings: Settings, top: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One measurement with cProfile on in the process under test."""
    under_test = run.peers[peer.key]
    under_test.call("profile_start")
    try:
        _, result = measure(run, peer, scenario, settings)
    finally:
        entries: list[dict[str, Any]] = under_test.call("profile_stop", top=top)[
            "entries"
        ]
    return result, entries


def select_peers(keys: list[str] | None) -> list[PeerSpec]:
    return [peer for peer in PEERS if keys is None or peer.key in keys]
