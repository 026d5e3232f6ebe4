"""Draw results JSON as a PNG: ``python plot.py RESULTS.json OUT.png``.

Runs in the ``tools`` environment (matplotlib is not a project dependency).
One small panel per scenario and mode: a horizontal bar per peer (median),
a whisker from min to max, our library highlighted.
"""

from __future__ import annotations

import json
import statistics
import sys
from typing import Any

import matplotlib  # type: ignore[import-not-found, unused-ignore]

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]

COLORS = {
    "ours": "#d62728",
    "ours_pure": "#ff9896",
    "tw012": "#7f7f7f",
    "websockets": "#1f77b4",
    "plain": "#2ca02c",
    "engine": "#9467bd",
    "ws_asyncio": "#aec7e8",
    "aiohttp": "#bcbd22",
}
MODES = {"server": "server under test", "client": "client under test"}


def main(source: str, target: str) -> None:
    with open(source) as file:
        data: dict[str, Any] = json.load(file)
    labels: dict[str, str] = data["labels"]
    scenarios: list[dict[str, Any]] = data["scenarios"]
    measurements: list[dict[str, Any]] = data["measurements"]
    modes = [mode for mode in MODES if any(m["mode"] == mode for m in measurements)]
    columns = 5
    rows_per_mode = -(-len(scenarios) // columns)
    figure, axes = plt.subplots(
        rows_per_mode * len(modes),
        columns,
        figsize=(4.2 * columns, 2.3 * rows_per_mode * len(modes) + 0.8),
        squeeze=False,
    )
    for axis in axes.flat:
        axis.set_visible(False)
    for mode_index, mode in enumerate(modes):
        for index, scenario in enumerate(scenarios):
            axis = axes[mode_index * rows_per_mode + index // columns][index % columns]
            _panel(axis, mode, scenario, measurements, labels)
    figure.suptitle(
        f"trio_websocket benchmarks ({data['meta']['date']}): rows 1-{rows_per_mode} "
        f"{MODES[modes[0]]}"
        + (
            f", rows {rows_per_mode + 1}-{2 * rows_per_mode} {MODES[modes[1]]}"
            if len(modes) > 1
            else ""
        )
        + "; bar = median, whisker = min-max",
        fontsize=12,
    )
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    figure.savefig(target, dpi=80)


def _panel(
    axis: Any,
    mode: str,
    scenario: dict[str, Any],
    measurements: list[dict[str, Any]],
    labels: dict[str, str],
) -> None:
    peers = [
        key
        for key in labels
        if any(
            m["peer"] == key and m["mode"] == mode and m["scenario"] == scenario["key"]
            for m in measurements
        )
    ]
    if not peers:
        return
    axis.set_visible(True)
    medians, lows, highs = [], [], []
    for peer in peers:
        values = [
            m["value"]
            for m in measurements
            if (m["mode"], m["scenario"], m["peer"]) == (mode, scenario["key"], peer)
        ]
        medians.append(statistics.median(values))
        lows.append(statistics.median(values) - min(values))
        highs.append(max(values) - statistics.median(values))
    positions = range(len(peers))
    axis.barh(
        positions,
        medians,
        xerr=[lows, highs],
        color=[COLORS.get(peer, "#999999") for peer in peers],
        capsize=3,
    )
    axis.set_yticks(list(positions), [labels[peer] for peer in peers], fontsize=8)
    axis.invert_yaxis()
    for position, median, high in zip(positions, medians, highs, strict=True):
        text = f" {median:,.0f}" if median >= 100 else f" {median:.1f}"
        axis.text(median + high, position, text, va="center", fontsize=8)
    better = "higher is better" if scenario["higher_is_better"] else "lower is better"
    axis.set_title(f"[{MODES[mode]}]\n{scenario['title']}", fontsize=9)
    axis.set_xlabel(f"{scenario['unit']} ({better})", fontsize=8)
    axis.tick_params(axis="x", labelsize=7)
    axis.set_xlim(0, max(m + h for m, h in zip(medians, highs, strict=True)) * 1.3)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
