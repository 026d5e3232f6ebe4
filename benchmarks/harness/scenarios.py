"""The scenarios of issue 6 and how long each one runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MiB = 2**20


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    workload: str  # round_trips, pipelined, fan_in, handshakes, mixed or memory
    unit: str
    params: dict[str, Any] = field(default_factory=dict)
    compression: bool = False
    metric: str = "value"  # which field of the workload's result is reported
    higher_is_better: bool = True


SCENARIOS = [
    Scenario(
        "latency_text16",
        "(1) latency, 16 B text round trips",
        "round_trips",
        "msg/s",
        {"kind": "text", "size": 16},
    ),
    Scenario(
        "latency_bin1k",
        "(1) latency, 1 KiB binary round trips",
        "round_trips",
        "msg/s",
        {"kind": "binary", "size": 1024},
    ),
    Scenario(
        "pipelined16",
        "(2) pipelined 16 B text, one connection",
        "pipelined",
        "msg/s",
        {"kind": "text", "size": 16},
    ),
    Scenario(
        "bulk1m",
        "(3) bulk 1 MiB binary echoes",
        "round_trips",
        "MiB/s",
        {"kind": "binary", "size": MiB, "warmup": 2, "max_count": 100_000},
        metric="mib_per_s",
    ),
    Scenario(
        "bulk16m",
        "(3) bulk 16 MiB binary echoes",
        "round_trips",
        "MiB/s",
        {"kind": "binary", "size": 16 * MiB, "warmup": 1, "max_count": 10_000},
        metric="mib_per_s",
    ),
    Scenario(
        "fanin100",
        "(4) 100 connections, sequential 64 B echoes",
        "fan_in",
        "msg/s",
        {"kind": "binary", "size": 64, "conns": 100},
    ),
    Scenario(
        "handshake_seq",
        "(5) handshakes, sequential",
        "handshakes",
        "conn/s",
        {"concurrency": 1},
    ),
    Scenario(
        "handshake_50",
        "(5) handshakes, 50 concurrent",
        "handshakes",
        "conn/s",
        {"concurrency": 50},
    ),
    Scenario(
        "memory_idle",
        "(6) memory per idle connection (1,000 open)",
        "memory",
        "KiB/conn",
        {"count": 1000},
        higher_is_better=False,
    ),
    Scenario(
        "deflate_json",
        "(7) permessage-deflate, pipelined 1 KiB JSON text",
        "pipelined",
        "msg/s",
        {"kind": "json", "size": 1024},
        compression=True,
    ),
    Scenario(
        "mixed4",
        "(8) mixed: 4 clients, echoes of 0–64 KiB binary (seeded random sizes)",
        "mixed",
        "echo/s",
        {"kind": "mixed", "size": 64 * 1024, "clients": 4, "warmup": 16},
    ),
    Scenario(
        "mixed4_deflate",
        "(8) mixed, permessage-deflate on",
        "mixed",
        "echo/s",
        {"kind": "mixed", "size": 64 * 1024, "clients": 4, "warmup": 16},
        compression=True,
    ),
]

BY_KEY = {scenario.key: scenario for scenario in SCENARIOS}


@dataclass(frozen=True)
class Settings:
    """How long and how often each measurement runs."""

    seconds: float  # time budget of one measurement
    repeats: int  # rounds of every peer, back to back, order rotated
    memory_repeats: int
    warmup: int  # round trips before timing starts

    @classmethod
    def quick(cls) -> Settings:
        return cls(seconds=0.25, repeats=3, memory_repeats=1, warmup=50)

    @classmethod
    def full(cls) -> Settings:
        return cls(seconds=1.5, repeats=7, memory_repeats=3, warmup=200)


def workload_params(scenario: Scenario, settings: Settings) -> dict[str, Any]:
    """The parameters sent to an agent for one measurement."""
    params: dict[str, Any] = {
        "seconds": settings.seconds,
        "warmup": settings.warmup,
        "max_count": 1_000_000,
        "window": 1000,  # pipelined: messages in flight at most
    }
    params.update(scenario.params)
    return params
