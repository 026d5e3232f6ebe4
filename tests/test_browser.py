"""The chat page of ``trio-websocket serve --broadcast`` in a real browser.

Two headless Chromium pages and one ``trio-websocket connect`` client join
the same room and each sees what the others say. Needs Debian's
``chromium`` (``/usr/bin/chromium``) and the ``playwright`` Python package
(which drives that browser; no browser download). Writes a screenshot to
``tests/artifacts/chat.png``.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CLI = [sys.executable, "-m", "trio_websocket"]
ARTIFACTS = Path(__file__).parent / "artifacts"
#: Seconds any one step may take before the test fails.
TIMEOUT = 15


class Lines:
    """The lines a subprocess writes, read by a thread, waited for with a bound."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line.rstrip("\n"))

    def next(self) -> str:
        try:
            return self._lines.get(timeout=TIMEOUT)
        except queue.Empty:
            raise AssertionError("no output line in time") from None


def spawn(
    args: list[str], *, stdin: int | None = None, stderr: int | IO[str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={k: v for k, v in os.environ.items() if "proxy" not in k.lower()},
    )


def stop(process: subprocess.Popen[str]) -> int:
    """End a subprocess (Ctrl-C first), wait for it, close its pipes."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        status = process.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        status = process.wait()
    for pipe in (process.stdin, process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()
    return status


@pytest.fixture
def room(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``trio-websocket serve --broadcast`` on a free port: (ws URL, page URL)."""
    with (tmp_path / "server.log").open("w") as log:
        server = spawn(["serve", "--broadcast", "--port", "0"], stderr=log)
        try:
            assert server.stdout is not None
            banner = Lines(server.stdout).next()
            match = re.search(
                r"on (ws://\S+) \(open (http://\S+) in a browser\)", banner
            )
            assert match, banner
            yield match.group(1), match.group(2)
        finally:
            assert stop(server) == 130
    assert "Traceback" not in (tmp_path / "server.log").read_text()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[BrowserContext]:
    """Headless Chromium with a fresh profile, driven by Playwright."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright package is not installed"
    )
    if not Path(CHROMIUM).exists():
        pytest.skip("no Chromium browser installed (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        context: BrowserContext = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
        )
        context.set_default_timeout(TIMEOUT * 1000)
        try:
            yield context
        finally:
            context.close()


def open_chat(browser: BrowserContext, url: str) -> Page:
    page = browser.new_page()
    page.goto(url)
    page.wait_for_function("window.chat && window.chat.ws.readyState === 1")
    return page


def say(page: Page, text: str) -> None:
    """Type a message into the page's input box and press Enter."""
    page.fill("#text", text)
    page.press("#text", "Enter")


def wait_for_message(page: Page, text: str) -> None:
    page.wait_for_function("text => window.chat.received.includes(text)", arg=text)


def test_two_pages_and_the_cli_share_a_room(
    room: tuple[str, str], browser: BrowserContext
) -> None:
    ws_url, page_url = room
    alice, bob = open_chat(browser, page_url), open_chat(browser, page_url)
    cli = spawn(["connect", ws_url], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert cli.stdin is not None and cli.stdout is not None
        heard = Lines(cli.stdout)
        cli.stdin.write("the cli is here\n")
        cli.stdin.flush()
        assert heard.next() == "the cli is here"  # so it has joined the room
        for page in (alice, bob):
            wait_for_message(page, "the cli is here")

        say(alice, "hello from alice")
        wait_for_message(bob, "hello from alice")
        assert heard.next() == "hello from alice"
        say(bob, "hello from bob")
        wait_for_message(alice, "hello from bob")
        assert heard.next() == "hello from bob"

        extensions = alice.evaluate("window.chat.ws.extensions")
        assert extensions.startswith("permessage-deflate"), extensions
        assert "permessage-deflate" in alice.inner_text("#status")
        assert alice.locator("#log li").all_inner_texts() == [
            "the cli is here",
            "hello from alice",
            "hello from bob",
        ]

        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / ".gitignore").write_text("*\n")
        screenshot = ARTIFACTS / "chat.png"
        alice.screenshot(path=str(screenshot))
        assert screenshot.read_bytes().startswith(b"\x89PNG")
        print(f"screenshot of the chat page: {screenshot}")

        cli.stdin.close()  # the end of input closes the connection normally
        assert cli.wait(timeout=TIMEOUT) == 0
    finally:
        stop(cli)
