"""Virtual environments: one per peer, one for the fixed peer, one for tools.

They live in ``benchmarks/.venvs/<name>`` (git-ignored) and are rebuilt when
their requirements or the Python version change (or with ``--rebuild``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = BENCH_DIR.parent
VENVS_DIR = BENCH_DIR / ".venvs"
AGENTS_DIR = BENCH_DIR / "agents"


@dataclass(frozen=True)
class Env:
    name: str
    requirements: tuple[str, ...]
    check: str  # Python code that must run in the finished environment

    @property
    def path(self) -> Path:
        return VENVS_DIR / self.name

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


ENVS = {
    env.name: env
    for env in (
        Env("ours", ("-e", str(REPO_DIR)), "import trio_websocket"),
        Env(
            "trio-websocket-0.12.2",
            ("trio-websocket==0.12.2",),
            "import trio_websocket; assert trio_websocket.__version__ == '0.12.2'",
        ),
        Env("websockets-trio", ("websockets>=15", "trio"), "import websockets.trio"),
        Env("plain-trio", ("trio",), "import trio"),
        # Cross-runtime references, on uvloop like the fixed peer.
        Env(
            "websockets-asyncio",
            ("websockets>=15", "uvloop"),
            "import websockets.asyncio.server, uvloop",
        ),
        Env("aiohttp", ("aiohttp==3.14.5", "uvloop"), "import aiohttp, uvloop"),
        Env(
            "fixed", ("websockets>=15", "uvloop"), "import websockets.speedups, uvloop"
        ),
        Env("tools", ("matplotlib", "py-spy"), "import matplotlib"),
    )
}


def _stamp(env: Env) -> dict[str, object]:
    return {"requirements": list(env.requirements), "python": sys.version}


def _build(env: Env, rebuild: bool, log: Callable[[str], None]) -> Path:
    stamp_file = env.path / "bench-stamp.json"
    fresh = stamp_file.exists() and json.loads(stamp_file.read_text()) == _stamp(env)
    if fresh and not rebuild:
        return env.python
    log(f"creating {env.path.relative_to(REPO_DIR)} ({' '.join(env.requirements)})")
    shutil.rmtree(env.path, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(env.path)], check=True)
    pip = [str(env.python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, *env.requirements], check=True, timeout=900)
    # Not from the repository root, where "import trio_websocket" finds ours.
    subprocess.run(
        [str(env.python), "-c", env.check], check=True, timeout=60, cwd=VENVS_DIR
    )
    stamp_file.write_text(json.dumps(_stamp(env)))
    return env.python


def ensure(names: list[str], rebuild: bool, log: Callable[[str], None]) -> None:
    """Create the named environments that are missing or stale, in parallel."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        for future in [pool.submit(_build, ENVS[name], rebuild, log) for name in names]:
            future.result()
