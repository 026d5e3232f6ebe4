"""Agent processes: one per peer and one for the fixed peer."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .envs import AGENTS_DIR, ENVS, VENVS_DIR

LOG_DIR = VENVS_DIR / "logs"


@dataclass(frozen=True)
class PeerSpec:
    key: str
    label: str
    env: str
    adapter: str  # the agent loads peer_<adapter>.py
    proto: str  # "ws" or "plain"
    agent: str = "trio_agent.py"  # or asyncio_agent.py
    environ: tuple[tuple[str, str], ...] = ()  # added to the agent's environment
    reference: bool = False  # another runtime: shown apart, no ratio targets


# The variables that pick our library's build (TRIO_WEBSOCKET_PURE=1: the
# pure-Python modules even where compiled ones are installed).
PURE = (("TRIO_WEBSOCKET_PURE", "1"),)


PEERS = [
    PeerSpec("ours", "this library", "ours", "trio_websocket", "ws"),
    PeerSpec(
        "ours_pure", "this library (pure)", "ours", "trio_websocket", "ws", environ=PURE
    ),
    PeerSpec(
        "tw012",
        "trio-websocket 0.12.2",
        "trio-websocket-0.12.2",
        "trio_websocket",
        "ws",
    ),
    PeerSpec(
        "websockets", "websockets.trio", "websockets-trio", "websockets_trio", "ws"
    ),
    PeerSpec("plain", "plain Trio TCP", "plain-trio", "plain_trio", "plain"),
    # The floor of any library on this engine: see agents/peer_engine_trio.py.
    PeerSpec(
        "engine",
        "websockets engine on plain Trio",
        "websockets-trio",
        "engine_trio",
        "ws",
    ),
    PeerSpec(
        "ws_asyncio",
        "websockets.asyncio",
        "websockets-asyncio",
        "websockets_asyncio",
        "ws",
        agent="asyncio_agent.py",
        reference=True,
    ),
    PeerSpec(
        "aiohttp",
        "aiohttp",
        "aiohttp",
        "aiohttp",
        "ws",
        agent="asyncio_agent.py",
        reference=True,
    ),
]


class AgentError(RuntimeError):
    pass


class Agent:
    """A subprocess obeying the JSON-lines control protocol."""

    def __init__(
        self,
        name: str,
        env: str,
        argv: list[str],
        environ: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.name = name
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self._log = open(LOG_DIR / f"{name}.log", "w")  # noqa: SIM115
        self.process = subprocess.Popen(
            [str(ENVS[env].python), *argv],
            cwd=AGENTS_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
            env={**os.environ, **dict(environ)} if environ else None,
        )
        self._replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        assert self.process.stdout is not None
        threading.Thread(
            target=self._read, args=(self.process.stdout,), daemon=True
        ).start()

    def _read(self, stdout: IO[str]) -> None:
        for line in stdout:
            self._replies.put(json.loads(line))
        self._replies.put(None)

    @property
    def pid(self) -> int:
        return self.process.pid

    def call(self, op: str, timeout: float = 120, **fields: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        request = {"op": op, "timeout": timeout, **fields}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        try:
            reply = self._replies.get(timeout=timeout + 15)
        except queue.Empty:
            raise AgentError(f"{self.name}: no answer to {op} in {timeout} s") from None
        if reply is None:
            raise AgentError(
                f"{self.name} exited; see {LOG_DIR / (self.name + '.log')}"
            )
        if not reply["ok"]:
            raise AgentError(f"{self.name}: {op} failed:\n{reply['error']}")
        return reply

    def close(self) -> None:
        try:
            if self.process.poll() is None:
                self.call("quit", timeout=5)
        except (AgentError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


def peer_agent(peer: PeerSpec, mode: str) -> Agent:
    return Agent(
        f"{mode}-{peer.key}", peer.env, [peer.agent, peer.adapter], peer.environ
    )


def fixed_agent(mode: str) -> Agent:
    return Agent(f"{mode}-fixed", "fixed", ["fixed_agent.py"])


def log_path(name: str) -> Path:
    return LOG_DIR / f"{name}.log"
