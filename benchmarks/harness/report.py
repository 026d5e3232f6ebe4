"""Turning measurements into ratios, a markdown table and (via plot.py) a PNG."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from .agents import PEERS
from .orchestrate import MODES, Measurement
from .scenarios import BY_KEY, SCENARIOS

LABELS = {peer.key: peer.label for peer in PEERS}
OURS = "ours"
MODE_TITLES = {
    "server": "Server under test (the fixed peer is the client)",
    "client": "Client under test (the fixed peer is the server)",
}


@dataclass(frozen=True)
class Summary:
    median: float
    low: float
    high: float

    def cell(self, digits: int) -> str:
        if self.low == self.high:
            return _number(self.median, digits)
        low, high = _number(self.low, digits), _number(self.high, digits)
        return f"{_number(self.median, digits)} ({low}–{high})"


def _number(value: float, digits: int) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def summarize(values: list[float]) -> Summary | None:
    if not values:
        return None
    return Summary(statistics.median(values), min(values), max(values))


def values(
    results: list[Measurement],
    mode: str,
    scenario: str,
    peer: str,
    key: str | None = None,
) -> list[float]:
    return [
        m.value if key is None else float(m.extra[key])
        for m in results
        if (m.mode, m.scenario, m.peer) == (mode, scenario, peer)
    ]


def ratios(
    results: list[Measurement], mode: str, scenario: str, other: str
) -> list[float]:
    """ours / other, per repeat (the two ran back to back in that repeat)."""
    ours = {
        m.repeat: m.value
        for m in results
        if (m.mode, m.scenario, m.peer) == (mode, scenario, OURS)
    }
    return [
        ours[m.repeat] / m.value
        for m in results
        if (m.mode, m.scenario, m.peer) == (mode, scenario, other)
        and m.repeat in ours
        and m.value
    ]


# Targets of issue 6: (scenarios, compared with, threshold). A threshold on
# peer None is an absolute bound on our own value (lower is better).
TARGETS: list[tuple[str, tuple[str, ...], str | None, float]] = [
    ("pipelined ≥ 0.8× plain Trio TCP", ("pipelined16",), "plain", 0.8),
    ("pipelined ≥ 2.5× trio-websocket 0.12.2", ("pipelined16",), "tw012", 2.5),
    ("pipelined ≥ 1.5× websockets.trio", ("pipelined16",), "websockets", 1.5),
    (
        "latency ≥ 0.85× plain Trio TCP",
        ("latency_text16", "latency_bin1k"),
        "plain",
        0.85,
    ),
    ("bulk ≥ 1.5× plain Trio TCP", ("bulk1m", "bulk16m"), "plain", 1.5),
    ("bulk ≥ 1.0× websockets.trio", ("bulk1m", "bulk16m"), "websockets", 1.0),
    ("fan-in ≥ 0.9× plain Trio TCP", ("fanin100",), "plain", 0.9),
    (
        "handshakes ≥ 2× trio-websocket 0.12.2",
        ("handshake_seq", "handshake_50"),
        "tw012",
        2.0,
    ),
    ("memory ≤ 10 KiB per idle connection", ("memory_idle",), None, 10.0),
    ("deflate ≥ 1.3× websockets.trio", ("deflate_json",), "websockets", 1.3),
]


def _target_cells(
    results: list[Measurement],
    modes: list[str],
    scenarios: tuple[str, ...],
    peer: str | None,
    threshold: float,
) -> list[str]:
    cells = []
    for mode in modes:
        parts = []
        for scenario in scenarios:
            if peer is None:
                summary = summarize(values(results, mode, scenario, OURS))
                met = summary is not None and summary.median <= threshold
                shown = f"{summary.median:.1f} KiB" if summary else "n/a"
            else:
                summary = summarize(ratios(results, mode, scenario, peer))
                met = summary is not None and summary.median >= threshold
                shown = f"{summary.median:.2f}×" if summary else "n/a"
            mark = "✅" if met else ("—" if summary is None else "❌")
            parts.append(
                f"{mark} {shown}"
                if len(scenarios) == 1
                else f"{scenario}: {mark} {shown}"
            )
        cells.append("<br>".join(parts))
    return cells


def markdown(results: list[Measurement], meta: dict[str, Any]) -> str:
    peers = [peer for peer in LABELS if any(m.peer == peer for m in results)]
    others = [peer for peer in peers if peer != OURS]
    lines = [
        "# Benchmark results",
        "",
        f"Run: `{meta['command']}` on {meta['date']}, {meta['duration']:.0f} s.",
        f"Machine: {meta['machine']}.",
        "",
        "Versions: "
        + "; ".join(f"{LABELS.get(k, k)}: {v}" for k, v in meta["versions"].items())
        + ".",
        "",
        "Each cell is the median over repeats with (min–max). Ratios are ours ÷ peer,",
        "computed per repeat (the peers ran back to back, order rotated) and then the",
        "median (min–max) taken. Higher is better except memory (lower is better).",
        "N/A: the peer does not offer permessage-deflate.",
        "",
    ]
    for mode in MODES:
        if not any(m.mode == mode for m in results):
            continue
        lines += [f"## {MODE_TITLES[mode]}", ""]
        header = [
            "Scenario",
            "Unit",
            *(LABELS[p] for p in peers),
            *(f"ours ÷ {LABELS[p]}" for p in others),
        ]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for scenario in SCENARIOS:
            if not any(m.mode == mode and m.scenario == scenario.key for m in results):
                continue
            digits = 1 if scenario.unit in ("KiB/conn", "MiB/s") else 0
            row = [scenario.title, scenario.unit]
            for peer in peers:
                summary = summarize(values(results, mode, scenario.key, peer))
                row.append(summary.cell(digits) if summary else "N/A")
            for peer in others:
                summary = summarize(ratios(results, mode, scenario.key, peer))
                row.append(summary.cell(2) if summary else "N/A")
            lines.append("| " + " | ".join(row) + " |")
        lines += [
            "",
            "Latency percentiles (median over repeats), µs per round trip:",
            "",
        ]
        lines += [
            "| Scenario | " + " | ".join(f"{LABELS[p]} p50 / p99" for p in peers) + " |"
        ]
        lines += ["|---|" + "---|" * len(peers)]
        for key in ("latency_text16", "latency_bin1k"):
            row = [BY_KEY[key].title]
            for peer in peers:
                p50 = summarize(values(results, mode, key, peer, "p50_us"))
                p99 = summarize(values(results, mode, key, peer, "p99_us"))
                row.append(
                    f"{p50.median:.0f} / {p99.median:.0f}" if p50 and p99 else "N/A"
                )
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    modes = [mode for mode in MODES if any(m.mode == mode for m in results)]
    lines += [
        "## Targets of issue 6",
        "",
        "| Target | "
        + " | ".join(f"{mode.capitalize()} under test" for mode in modes)
        + " |",
        "|---|" + "---|" * len(modes),
    ]
    for title, scenarios, compared, threshold in TARGETS:
        if not any(m.scenario in scenarios for m in results):
            continue
        cells = _target_cells(results, modes, scenarios, compared, threshold)
        lines.append("| " + " | ".join([title, *cells]) + " |")
    lines += [
        "",
        "Memory is the tracemalloc delta in the process under test divided by the",
        "number of connections; the RSS delta is in `latest.json`.",
        "",
    ]
    return "\n".join(lines)
