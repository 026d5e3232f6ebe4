"""Benchmark suite of issue 6: ``python benchmarks/run.py [--quick]``.

Creates one virtual environment per peer under ``benchmarks/.venvs/`` (first
run only), runs every scenario with the server under test and with the client
under test, and writes ``benchmarks/results/latest.{md,json,png}``.
See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.agents import PEERS
from harness.envs import BENCH_DIR, ENVS, REPO_DIR, ensure
from harness.orchestrate import (
    MODES,
    Measurement,
    run_scenarios,
    select_peers,
    start_mode,
)
from harness.report import LABELS, markdown
from harness.scenarios import BY_KEY, SCENARIOS, Settings


def log(message: str) -> None:
    print(message, flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (under 3 min)")
    parser.add_argument("--modes", default=",".join(MODES), help="server,client")
    parser.add_argument("--scenarios", help="comma-separated keys: " + ",".join(BY_KEY))
    parser.add_argument(
        "--peers", help="comma-separated: " + ",".join(p.key for p in PEERS)
    )
    parser.add_argument("--repeats", type=int, help="override the number of repeats")
    parser.add_argument(
        "--seconds", type=float, help="override seconds per measurement"
    )
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results")
    parser.add_argument(
        "--name", default="latest", help="file name stem of the results"
    )
    parser.add_argument("--rebuild", action="store_true", help="recreate the venvs")
    parser.add_argument("--no-plot", action="store_true")
    return parser.parse_args(argv)


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.release()}, {model}, {os.cpu_count()} CPUs"


def source() -> str:
    """The commit the library is measured at, and whether its files differ."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO_DIR, capture_output=True, text=True, timeout=30
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "trio_websocket")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not head:
        return "unknown"
    return f"commit {head}" + (
        " with uncommitted changes in trio_websocket/" if dirty else ""
    )


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    settings = Settings.quick() if args.quick else Settings.full()
    if args.repeats:
        settings = dataclasses.replace(settings, repeats=args.repeats)
    if args.seconds:
        settings = dataclasses.replace(settings, seconds=args.seconds)
    peers = select_peers(args.peers.split(",") if args.peers else None)
    scenarios = (
        [BY_KEY[key] for key in args.scenarios.split(",")]
        if args.scenarios
        else SCENARIOS
    )
    modes = [mode for mode in args.modes.split(",") if mode]

    setup_start = time.perf_counter()
    env_names = [*{peer.env for peer in peers}, "fixed"] + (
        [] if args.no_plot else ["tools"]
    )
    ensure(env_names, args.rebuild, log)
    log(f"environments ready in {time.perf_counter() - setup_start:.0f} s")

    start = time.perf_counter()
    results: list[Measurement] = []
    versions: dict[str, str] = {}
    builds: dict[str, str] = {}
    for mode in modes:
        log(f"mode: {mode} under test")
        run = start_mode(mode, peers)
        try:
            for key, info in run.info.items():
                versions[key] = (
                    f"{info['library']} {info['version']} (Python {info['python']})"
                )
                if "build" in info:
                    builds[key] = info["build"]
            results += run_scenarios(run, peers, scenarios, settings, log)
        finally:
            run.close()
    duration = time.perf_counter() - start
    log(f"measured in {duration:.0f} s")

    meta = {
        "command": "python benchmarks/run.py " + " ".join(argv),
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "duration": duration,
        "machine": machine(),
        "source": source(),
        "versions": versions,
        "builds": builds,
        "settings": dataclasses.asdict(settings),
    }
    args.output.mkdir(parents=True, exist_ok=True)
    data = {
        "meta": meta,
        "labels": {**LABELS},
        "scenarios": [
            {k: v for k, v in dataclasses.asdict(s).items() if k != "params"}
            for s in scenarios
        ],
        "measurements": [dataclasses.asdict(m) for m in results],
    }
    json_path = args.output / f"{args.name}.json"
    json_path.write_text(json.dumps(data, indent=1))
    md_path = args.output / f"{args.name}.md"
    md_path.write_text(markdown(results, meta))
    log(f"wrote {md_path}")
    if not args.no_plot:
        png_path = args.output / f"{args.name}.png"
        plot = BENCH_DIR / "harness" / "plot.py"
        subprocess.run(
            [str(ENVS["tools"].python), str(plot), str(json_path), str(png_path)],
            check=True,
            timeout=120,
        )
        log(f"wrote {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
