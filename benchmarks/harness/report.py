"""Turning measurements into ratios, a markdown table and (via plot.py) a PNG."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from .agents import PEERS
from .orchestrate import MODES, Measurement
from .scenarios import BY_KEY, SCENARIOS

LABELS = {peer.key: peer.label for peer in PEERS}
REFERENCES = {peer.key for peer in PEERS if peer.reference}
OURS = "ours"
OURS_PURE = "ours_pure"
OUR_VARIANTS = (OURS, OURS_PURE)
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
    results: list[Measurement],
    mode: str,
    scenario: str,
    other: str,
    ours_key: str = OURS,
) -> list[float]:
    """ours / other, per repeat (the two ran back to back in that repeat)."""
    ours = {
        m.repeat: m.value
        for m in results
        if (m.mode, m.scenario, m.peer) == (mode, scenario, ours_key)
    }
    return [
        ours[m.repeat] / m.value
        for m in results
        if (m.mode, m.scenario, m.peer) == (mode, scenario, other)
        and m.repeat in ours
        and m.value
    ]


# Targets: (issue, title, scenarios, compared with, threshold). A threshold on
# peer None is an absolute bound on our own value (lower is better). Issue 14
# replaced issue 6's bounds on latency, pipelined, fan-in and memory.
TARGETS: list[tuple[int, str, tuple[str, ...], str | None, float]] = [
    (
        14,
        "latency ≥ 0.9× plain Trio TCP",
        ("latency_text16", "latency_bin1k"),
        "plain",
        0.9,
    ),
    (14, "fan-in ≥ 0.7× plain Trio TCP", ("fanin100",), "plain", 0.7),
    (14, "pipelined ≥ 1.5× plain Trio TCP", ("pipelined16",), "plain", 1.5),
    (14, "bulk ≥ 1.5× plain Trio TCP", ("bulk1m", "bulk16m"), "plain", 1.5),
    (
        14,
        "handshakes ≥ 2× trio-websocket 0.12.2",
        ("handshake_seq", "handshake_50"),
        "tw012",
        2.0,
    ),
    (
        14,
        "handshakes ≥ 0.6× plain Trio TCP",
        ("handshake_seq", "handshake_50"),
        "plain",
        0.6,
    ),
    (14, "memory ≤ 6 KiB per idle connection", ("memory_idle",), None, 6.0),
    (14, "mixed: lead websockets.trio (≥ 1.0×)", ("mixed4",), "websockets", 1.0),
    (6, "pipelined ≥ 2.5× trio-websocket 0.12.2", ("pipelined16",), "tw012", 2.5),
    (6, "pipelined ≥ 1.5× websockets.trio", ("pipelined16",), "websockets", 1.5),
    (6, "bulk ≥ 1.0× websockets.trio", ("bulk1m", "bulk16m"), "websockets", 1.0),
    (6, "deflate ≥ 1.3× websockets.trio", ("deflate_json",), "websockets", 1.3),
]


def _target_cells(
    results: list[Measurement],
    columns: list[tuple[str, str]],
    scenarios: tuple[str, ...],
    peer: str | None,
    threshold: float,
) -> list[str]:
    cells = []
    for ours_key, mode in columns:
        parts = []
        for scenario in scenarios:
            if peer is None:
                summary = summarize(values(results, mode, scenario, ours_key))
                met = summary is not None and summary.median <= threshold
                shown = f"{summary.median:.1f} KiB" if summary else "n/a"
            else:
                summary = summarize(ratios(results, mode, scenario, peer, ours_key))
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


def _build_note(meta: dict[str, Any], peers: list[str]) -> list[str]:
    """Which build each row of our library ran, and whether they differ."""
    builds = meta.get("builds", {})
    if OURS_PURE not in peers:
        return []
    ours, pure = builds.get(OURS, "?"), builds.get(OURS_PURE, "?")
    line = (
        f"Builds: “{LABELS[OURS]}” imports what is installed ({ours} modules); "
        f"“{LABELS[OURS_PURE]}” runs with `TRIO_WEBSOCKET_PURE=1` ({pure} modules)."
    )
    if ours == pure:
        line += (
            f" **Both rows ran the same {ours} code**: no compiled build is"
            " installed (none exists yet), so they differ by noise only."
        )
    return [line, ""]


def _table(
    results: list[Measurement], mode: str, shown: list[str], compared: list[str]
) -> list[str]:
    """One row per scenario: every peer in ``shown``, then ours ÷ each of
    ``compared``."""
    header = [
        "Scenario",
        "Unit",
        *(LABELS[p] for p in shown),
        *(f"ours ÷ {LABELS[p]}" for p in compared),
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for scenario in SCENARIOS:
        if not any(m.mode == mode and m.scenario == scenario.key for m in results):
            continue
        digits = 1 if scenario.unit in ("KiB/conn", "MiB/s") else 0
        row = [scenario.title, scenario.unit]
        for peer in shown:
            summary = summarize(values(results, mode, scenario.key, peer))
            row.append(summary.cell(digits) if summary else "N/A")
        for peer in compared:
            summary = summarize(ratios(results, mode, scenario.key, peer))
            row.append(summary.cell(2) if summary else "N/A")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _extra_table(
    results: list[Measurement],
    mode: str,
    peers: list[str],
    keys: tuple[str, ...],
    fields: tuple[str, ...],
    fmt: str,
    heading: str,
) -> list[str]:
    """A smaller table of result fields (``extra``), median over repeats."""
    keys = tuple(
        k for k in keys if any(m.mode == mode and m.scenario == k for m in results)
    )
    if not keys:
        return []
    lines = [heading, ""]
    lines += ["| Scenario | " + " | ".join(LABELS[p] for p in peers) + " |"]
    lines += ["|---|" + "---|" * len(peers)]
    for key in keys:
        row = [BY_KEY[key].title]
        for peer in peers:
            parts = [summarize(values(results, mode, key, peer, f)) for f in fields]
            row.append(
                " / ".join(fmt.format(p.median) for p in parts if p)
                if all(parts)
                else "N/A"
            )
        lines.append("| " + " | ".join(row) + " |")
    return [*lines, ""]


def markdown(results: list[Measurement], meta: dict[str, Any]) -> str:
    present = [peer for peer in LABELS if any(m.peer == peer for m in results)]
    peers = [peer for peer in present if peer not in REFERENCES]
    references = [peer for peer in present if peer in REFERENCES]
    others = [peer for peer in peers if peer != OURS]
    lines = [
        "# Benchmark results",
        "",
        f"Run: `{meta['command']}` on {meta['date']}, {meta['duration']:.0f} s.",
        f"Machine: {meta['machine']}. "
        + meta.get(
            "note",
            "A shared, noisy VM: other jobs ran at the same time, so compare "
            "within a run (the ratios), not across runs.",
        ),
        "",
        f"This library: {meta.get('source', 'unknown')} (the working tree).",
        "",
        "Versions: "
        + "; ".join(f"{LABELS.get(k, k)}: {v}" for k, v in meta["versions"].items())
        + ".",
        "",
        *_build_note(meta, present),
        "Each cell is the median over repeats with (min–max). Ratios are ours ÷ peer,",
        "computed per repeat (the peers ran back to back, order rotated) and then the",
        "median (min–max) taken. Higher is better except memory (lower is better).",
        "N/A: the peer does not offer permessage-deflate.",
        "",
    ]
    if references:
        lines += [
            "The cross-runtime references ("
            + ", ".join(LABELS[p] for p in references)
            + ") run on asyncio, not Trio, against the same fixed peer: they show",
            "where Python WebSocket speed stands. Reference (other runtime, no "
            "target): they are in tables of their own, and no target compares "
            "with them.",
            "",
        ]
    for mode in MODES:
        if not any(m.mode == mode for m in results):
            continue
        lines += [f"## {MODE_TITLES[mode]}", ""]
        lines += _table(results, mode, peers, others)
        lines.append("")
        lines += _extra_table(
            results,
            mode,
            peers,
            ("latency_text16", "latency_bin1k"),
            ("p50_us", "p99_us"),
            "{:.0f}",
            "Latency percentiles (median over repeats), µs per round trip, p50 / p99:",
        )
        lines += _extra_table(
            results,
            mode,
            [*peers, *references],
            ("mixed4", "mixed4_deflate"),
            ("mib_per_s", "cpu_us"),
            "{:.0f}",
            "Mixed workload (median over repeats): payload MiB/s one way / CPU µs"
            " per echo in the process under test (steadier than rates here):",
        )
        if references:
            lines += [
                f"### {MODE_TITLES[mode]}: reference (other runtime, no target)",
                "",
            ]
            shown = [p for p in (OURS,) if p in peers] + references
            lines += _table(results, mode, shown, references)
            lines.append("")
    modes = [mode for mode in MODES if any(m.mode == mode for m in results)]
    variants = [key for key in OUR_VARIANTS if key in peers]
    columns = [(key, mode) for key in variants for mode in modes]
    lines += [
        "## Targets (issue 14, and those of issue 6 it kept)",
        "",
        "| Issue | Target | "
        + " | ".join(
            f"{mode.capitalize()} under test"
            + (f" ({LABELS[key]})" if len(variants) > 1 else "")
            for key, mode in columns
        )
        + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for issue, title, scenarios, compared, threshold in TARGETS:
        if not any(m.scenario in scenarios for m in results):
            continue
        cells = _target_cells(results, columns, scenarios, compared, threshold)
        lines.append("| " + " | ".join([str(issue), title, *cells]) + " |")
    lines += [
        "",
        "Memory is the tracemalloc delta in the process under test divided by the",
        "number of connections; the RSS delta is in the JSON file.",
        "",
    ]
    return "\n".join(lines)
