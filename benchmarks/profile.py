"""Profile one peer's hot path: ``python benchmarks/profile.py``.

Runs each scenario once, server side and client side, while py-spy samples the
process under test (``--sampler cprofile`` uses cProfile in that process
instead, which costs far more per call), and prints the functions with the
most CPU time in microseconds per message.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.agents import PEERS, PeerSpec
from harness.envs import ensure
from harness.orchestrate import MODES, ModeRun, measure, profile, start_mode
from harness.sampling import RATE, sampled
from harness.scenarios import BY_KEY, Scenario, Settings

Row = tuple[float, float, str]  # own us/msg, inclusive us/msg, function


def with_py_spy(
    run: ModeRun, peer: PeerSpec, scenario: Scenario, settings: Settings, top: int
) -> tuple[dict[str, Any], list[Row], float]:
    with sampled(run.peers[peer.key].pid) as samples:
        _, result = measure(run, peer, scenario, settings)
    scale = 1e6 / RATE / result["count"]
    rows = [
        (count * scale, samples.inclusive[function] * scale, function)
        for function, count in samples.own.most_common(top)
    ]
    return result, rows, samples.total * scale


def with_cprofile(
    run: ModeRun, peer: PeerSpec, scenario: Scenario, settings: Settings, top: int
) -> tuple[dict[str, Any], list[Row], float]:
    result, entries = profile(run, peer, scenario, settings, top)
    scale = 1e6 / result["count"]
    rows = [
        (e["tottime"] * scale, e["cumtime"] * scale, e["function"]) for e in entries
    ]
    return result, rows, float("nan")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", default="ours", choices=[p.key for p in PEERS])
    parser.add_argument("--scenarios", default="latency_text16,pipelined16")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--sampler", choices=["py-spy", "cprofile"], default="py-spy")
    args = parser.parse_args(argv)
    peer = next(p for p in PEERS if p.key == args.peer)
    settings = Settings(seconds=args.seconds, repeats=1, memory_repeats=1, warmup=200)
    ensure([peer.env, "fixed", "tools"], rebuild=False, log=print)
    sample = with_py_spy if args.sampler == "py-spy" else with_cprofile
    for mode in args.modes.split(","):
        run = start_mode(mode, [peer])
        try:
            for key in args.scenarios.split(","):
                result, rows, total = sample(run, peer, BY_KEY[key], settings, args.top)
                print(f"\n{peer.label}, {mode} under test, {key}, {args.sampler}:")
                print(f"{result['count']} messages, {result['value']:,.0f}/s", end="")
                print(f", {total:.1f} us of CPU per message" if total == total else "")
                print(f"{'own us':>8} {'incl us':>8}  function (per message)")
                for own, inclusive, function in rows:
                    print(f"{own:8.2f} {inclusive:8.2f}  {function}")
        finally:
            run.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
