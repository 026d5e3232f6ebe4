"""Proxies: real tinyproxy (HTTP CONNECT) and microsocks (SOCKS5) servers.

Each proxy runs as a child process on 127.0.0.1 for the length of a test.
A connection that went through a proxy has the proxy as its remote end, so
``connection.remote.port`` tells which way it went.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import pytest
import trio
from conftest import server_url

from trio_websocket import (
    Endpoint,
    HandshakeError,
    ProxyError,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    connect_websocket,
    open_websocket_url,
    serve_websocket,
)
from trio_websocket._proxy import (
    Proxy,
    ProxySetting,
    bypasses_proxy,
    choose_proxy,
    parse_proxy_url,
)

TINYPROXY = shutil.which("tinyproxy")
MICROSOCKS = shutil.which("microsocks")
USER, PASSWORD = "alice", "s3cret"
# microsocks takes any password: one that needs percent-encoding in a URL.
ODD_PASSWORD, ODD_PASSWORD_QUOTED = "p@ss:w/rd %", "p%40ss%3Aw%2Frd%20%25"

Launch = Callable[[Sequence[str], int], Awaitable[None]]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_listening(port: int, process: trio.Process) -> None:
    """Poll until something accepts connections on ``port``."""
    with trio.fail_after(10):
        while process.returncode is None:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.01)
            else:
                await stream.aclose()
                return
    raise RuntimeError(f"the proxy exited with status {process.returncode}")


@pytest.fixture
async def launch() -> AsyncIterator[Launch]:
    """Start server processes for the test; terminate them afterwards."""
    processes: list[trio.Process] = []

    async def start(argv: Sequence[str], port: int) -> None:
        process = await trio.lowlevel.open_process(
            list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        processes.append(process)
        await wait_listening(port, process)

    yield start
    for process in processes:
        process.terminate()
        with trio.move_on_after(5):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


async def start_tinyproxy(
    launch: Launch, config_dir: Path, *extra_config: str
) -> Proxy:
    """Run tinyproxy in the foreground with a generated configuration."""
    if TINYPROXY is None:
        pytest.skip("tinyproxy is not installed (apt-get install tinyproxy)")
    port = free_port()
    config = config_dir / f"tinyproxy-{port}.conf"
    lines = [f"Port {port}", "Listen 127.0.0.1", "Allow 127.0.0.1", *extra_config]
    config.write_text("\n".join(lines) + "\n")
    await launch([TINYPROXY, "-d", "-c", str(config)], port)
    return Proxy("http", "127.0.0.1", port)


async def start_microsocks(launch: Launch, *credentials: str) -> Proxy:
    """Run microsocks, asking for ``credentials`` (user, password) if given."""
    if MICROSOCKS is None:
        pytest.skip("microsocks is not installed (apt-get install microsocks)")
    port = free_port()
    auth = ["-u", credentials[0], "-P", credentials[1]] if credentials else []
    await launch([MICROSOCKS, "-i", "127.0.0.1", "-p", str(port), *auth], port)
    return Proxy("socks5", "127.0.0.1", port)


@pytest.fixture
async def http_proxy(launch: Launch, tmp_path: Path) -> Proxy:
    """An HTTP CONNECT proxy without authentication."""
    return await start_tinyproxy(launch, tmp_path)


@pytest.fixture
async def auth_http_proxy(launch: Launch, tmp_path: Path) -> Proxy:
    """An HTTP CONNECT proxy that wants ``USER``:``PASSWORD``."""
    return await start_tinyproxy(launch, tmp_path, f"BasicAuth {USER} {PASSWORD}")


@pytest.fixture
async def socks_proxy(launch: Launch) -> Proxy:
    """A SOCKS5 proxy without authentication."""
    return await start_microsocks(launch)


@pytest.fixture
async def auth_socks_proxy(launch: Launch) -> Proxy:
    """A SOCKS5 proxy that wants ``USER`` and a password with odd characters."""
    return await start_microsocks(launch, USER, ODD_PASSWORD)


def proxy_url(proxy: Proxy, scheme: str | None = None, user_info: str = "") -> str:
    host = f"{user_info}@{proxy.host}" if user_info else proxy.host
    return f"{scheme or proxy.scheme}://{host}:{proxy.port}"


def remote_port(connection: WebSocketConnection) -> int:
    remote = connection.remote
    assert isinstance(remote, Endpoint)
    return remote.port


async def assert_echo(connection: WebSocketConnection) -> None:
    with trio.fail_after(5):
        await connection.send_message("through the tunnel")
        assert await connection.get_message() == "through the tunnel"


async def echo_through(
    url: str, proxy: ProxySetting, ssl_context: ssl.SSLContext | None = None
) -> int:
    """Connect, check the echo, and return the port the client talked to."""
    with trio.fail_after(10):
        async with open_websocket_url(url, ssl_context, proxy=proxy) as connection:
            await assert_echo(connection)
            return remote_port(connection)


@pytest.fixture(params=["ws", "wss"])
def echo_target(
    request: pytest.FixtureRequest,
    echo_server: WebSocketServer,
    tls_echo_server: WebSocketServer,
    client_ssl_context: ssl.SSLContext,
) -> tuple[str, ssl.SSLContext | None]:
    """The URL of a plain or a TLS echo server, and the client's TLS context."""
    if request.param == "ws":
        return server_url(echo_server), None
    return server_url(tls_echo_server), client_ssl_context


# -- HTTP CONNECT ----------------------------------------------------------------


async def test_connect_tunnel_carries_ws_and_wss(
    http_proxy: Proxy, echo_target: tuple[str, ssl.SSLContext | None]
) -> None:
    url, context = echo_target
    assert await echo_through(url, proxy_url(http_proxy), context) == http_proxy.port


async def test_tls_inside_the_tunnel_checks_the_server_certificate(
    http_proxy: Proxy, tls_echo_server: WebSocketServer
) -> None:
    # The default context does not trust the test CA: the server's
    # certificate is checked end to end, not trusted because of the proxy.
    with pytest.raises(HandshakeError) as caught:
        await echo_through(server_url(tls_echo_server), proxy_url(http_proxy))
    assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)


async def test_connect_with_credentials(auth_http_proxy: Proxy, echo_url: str) -> None:
    url = proxy_url(auth_http_proxy, user_info=f"{USER}:{PASSWORD}")
    assert await echo_through(echo_url, url) == auth_http_proxy.port


@pytest.mark.parametrize(
    ("user_info", "statuses"),
    [("", {407}), (f"{USER}:wrong", {401, 407})],
    ids=["missing", "wrong"],
)
async def test_connect_with_bad_credentials_is_refused(
    auth_http_proxy: Proxy, echo_url: str, user_info: str, statuses: set[int]
) -> None:
    # tinyproxy answers 407 without credentials, 401 for wrong ones.
    url = proxy_url(auth_http_proxy, user_info=user_info)
    with pytest.raises(ProxyError) as caught:
        await echo_through(echo_url, url)
    assert caught.value.status_code in statuses
    assert f"HTTP {caught.value.status_code}" in str(caught.value)


async def test_connect_refused_by_proxy_rules(
    launch: Launch, tmp_path: Path, echo_url: str
) -> None:
    proxy = await start_tinyproxy(launch, tmp_path, "ConnectPort 9")
    with pytest.raises(ProxyError) as caught:
        await echo_through(echo_url, proxy_url(proxy))
    assert caught.value.status_code == 403
    assert "refused the tunnel" in str(caught.value)


async def test_host_and_port_entry_point_takes_a_proxy(
    http_proxy: Proxy, echo_server: WebSocketServer, nursery: trio.Nursery
) -> None:
    connection = await connect_websocket(
        nursery,
        "127.0.0.1",
        echo_server.port,
        "/",
        use_ssl=False,
        proxy=proxy_url(http_proxy),
    )
    await assert_echo(connection)
    assert remote_port(connection) == http_proxy.port
    await connection.aclose()


async def test_unreachable_proxy_is_a_handshake_error_naming_it(
    echo_url: str,
) -> None:
    proxy = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(HandshakeError, match=f"through the proxy {proxy}") as caught:
        await echo_through(echo_url, proxy)
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)


async def test_unreachable_proxy_is_an_os_error_from_connect_websocket(
    echo_server: WebSocketServer, nursery: trio.Nursery
) -> None:
    proxy = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionRefusedError) as caught:
        await connect_websocket(
            nursery, "127.0.0.1", echo_server.port, "/", use_ssl=False, proxy=proxy
        )
    assert any(proxy in note for note in caught.value.__notes__)


# -- SOCKS5 ----------------------------------------------------------------------


async def test_socks5_carries_ws_and_wss(
    socks_proxy: Proxy, echo_target: tuple[str, ssl.SSLContext | None]
) -> None:
    url, context = echo_target
    assert await echo_through(url, proxy_url(socks_proxy), context) == socks_proxy.port


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
async def test_socks5_with_credentials(
    auth_socks_proxy: Proxy, echo_url: str, scheme: str
) -> None:
    url = proxy_url(auth_socks_proxy, scheme, f"{USER}:{ODD_PASSWORD_QUOTED}")
    assert await echo_through(echo_url, url) == auth_socks_proxy.port


async def test_socks5h_passes_the_host_name(
    socks_proxy: Proxy, nursery: trio.Nursery
) -> None:
    if socket.getaddrinfo("localhost", 80)[0][4][0] != "127.0.0.1":
        pytest.skip("localhost does not resolve to 127.0.0.1 first here")
    seen: list[str] = []

    async def handler(request: WebSocketRequest) -> None:
        seen.extend(v.decode() for k, v in request.headers if k == b"host")
        await (await request.accept()).send_message("hello")

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    url = f"ws://localhost:{server.port}/"
    async with open_websocket_url(url, proxy=proxy_url(socks_proxy, "socks5h")) as ws:
        assert await ws.get_message() == "hello"
    assert seen == [f"localhost:{server.port}"]


@pytest.mark.parametrize(
    ("user_info", "message"),
    [("", "none of the authentication methods"), (f"{USER}:no", "user name")],
    ids=["missing", "wrong"],
)
async def test_socks5_with_bad_credentials_is_refused(
    auth_socks_proxy: Proxy, echo_url: str, user_info: str, message: str
) -> None:
    with pytest.raises(ProxyError, match=message) as caught:
        await echo_through(echo_url, proxy_url(auth_socks_proxy, user_info=user_info))
    assert caught.value.status_code is None


async def test_socks5_failure_reply_is_a_proxy_error(socks_proxy: Proxy) -> None:
    url = f"ws://127.0.0.1:{free_port()}/"
    with pytest.raises(ProxyError, match=r"refused the tunnel .*: connection refused"):
        await echo_through(url, proxy_url(socks_proxy))


# -- The environment -------------------------------------------------------------


@pytest.fixture
def proxied_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let environment proxies carry loopback hosts, as they would any other.

    Loopback hosts bypass environment proxies, but the only servers a test
    may reach are on loopback: without this the tests of the environment
    variables below could not see a proxy being used.
    """
    monkeypatch.setattr("trio_websocket._proxy.is_loopback", lambda host: False)


@pytest.mark.parametrize("variable", ["http_proxy", "HTTP_PROXY", "all_proxy"])
async def test_environment_proxy_for_ws(
    proxied_loopback: None,
    http_proxy: Proxy,
    echo_url: str,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
) -> None:
    monkeypatch.setenv(variable, proxy_url(http_proxy))
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:1")  # not for ws://
    assert await echo_through(echo_url, None) == http_proxy.port


async def test_environment_proxy_for_wss(
    proxied_loopback: None,
    socks_proxy: Proxy,
    tls_echo_server: WebSocketServer,
    client_ssl_context: ssl.SSLContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("https_proxy", proxy_url(socks_proxy))
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:1")  # not for wss://
    url = server_url(tls_echo_server)
    port = await echo_through(url, None, client_ssl_context)
    assert port == socks_proxy.port


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_loopback_hosts_bypass_the_environment_proxy(
    echo_server: WebSocketServer, monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    # Selenium's CDP connection to ws://localhost:9222 with http_proxy set in
    # CI: trio-websocket 0.12 never used a proxy, and a proxy cannot reach it.
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:1")  # would fail
    monkeypatch.setenv("all_proxy", "http://127.0.0.1:1")
    url = f"ws://{host}:{echo_server.port}/"
    assert await echo_through(url, None) == echo_server.port


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "localhost, 127.0.0.0/8", "*"])
async def test_no_proxy_bypasses_the_environment_proxy(
    echo_server: WebSocketServer,
    monkeypatch: pytest.MonkeyPatch,
    no_proxy: str,
    proxied_loopback: None,
) -> None:
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:1")  # would fail
    monkeypatch.setenv("NO_PROXY", no_proxy)
    assert await echo_through(server_url(echo_server), None) == echo_server.port


@pytest.mark.parametrize("disabled", [False, ""])
async def test_proxy_false_ignores_the_environment(
    echo_server: WebSocketServer,
    monkeypatch: pytest.MonkeyPatch,
    disabled: ProxySetting,
) -> None:
    monkeypatch.setenv("all_proxy", "http://127.0.0.1:1")
    assert await echo_through(server_url(echo_server), disabled) == echo_server.port


async def test_explicit_proxy_wins_over_the_environment(
    socks_proxy: Proxy, echo_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:1")
    monkeypatch.setenv("no_proxy", "*")
    assert await echo_through(echo_url, proxy_url(socks_proxy)) == socks_proxy.port


# -- The rules, without servers --------------------------------------------------


@pytest.mark.parametrize(
    ("host", "port", "no_proxy", "bypassed"),
    [
        ("example.com", 80, "example.com", True),
        ("api.example.com", 80, "example.com", True),
        ("api.example.com", 80, ".example.com", True),
        ("example.com", 80, ".example.com", True),
        ("api.example.com", 80, "*.example.com", True),
        ("notexample.com", 80, "example.com", False),
        ("example.com", 80, "other.org, EXAMPLE.COM", True),
        ("example.com.", 80, "example.com", True),
        ("example.com", 80, "example.com:8080", False),
        ("example.com", 8080, "example.com:8080", True),
        ("10.1.2.3", 80, "10.0.0.0/8", True),
        ("11.1.2.3", 80, "10.0.0.0/8", False),
        ("::1", 80, "::1", True),
        ("::1", 443, "[::1]:443", True),
        ("::1", 80, "[::1]:443", False),
        ("127.0.0.1", 80, "localhost", False),
        ("example.com", 80, "", False),
        ("example.com", 80, "*", True),
    ],
)
def test_no_proxy_matching(host: str, port: int, no_proxy: str, bypassed: bool) -> None:
    assert bypasses_proxy(host, port, no_proxy) is bypassed


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LOCALHOST.", True),
        ("app.localhost", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost.example.com", False),
        ("10.0.0.1", False),
        ("example.com", False),
    ],
)
def test_environment_proxy_skips_loopback_hosts(host: str, loopback: bool) -> None:
    proxy = choose_proxy(None, host, 80, False, {"http_proxy": "http://h:1"})
    assert (proxy is None) is loopback
    assert choose_proxy("http://h:1", host, 80, False) is not None  # explicit


@pytest.mark.parametrize(
    ("environ", "secure", "expected"),
    [
        ({"http_proxy": "http://h:1", "https_proxy": "http://s:2"}, False, "h"),
        ({"http_proxy": "http://h:1", "https_proxy": "http://s:2"}, True, "s"),
        ({"all_proxy": "socks5://a:3"}, True, "a"),
        ({"https_proxy": "http://s:2", "all_proxy": "socks5://a:3"}, True, "s"),
        (
            {"https_proxy": "http://lower:2", "HTTPS_PROXY": "http://UP:2"},
            True,
            "lower",
        ),
        ({"HTTPS_PROXY": "http://up:2"}, True, "up"),
        # Under CGI, HTTP_PROXY may come from a client's "Proxy:" header.
        ({"HTTP_PROXY": "http://evil:1", "REQUEST_METHOD": "GET"}, False, None),
        ({"http_proxy": "http://h:1", "no_proxy": "target.test"}, False, None),
        ({}, False, None),
    ],
)
def test_proxy_chosen_from_the_environment(
    environ: dict[str, str], secure: bool, expected: str | None
) -> None:
    proxy = choose_proxy(None, "target.test", 443, secure, environ)
    assert (proxy.host if proxy else None) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("proxy.test:3128", Proxy("http", "proxy.test", 3128)),
        ("http://proxy.test", Proxy("http", "proxy.test", 80)),
        ("SOCKS5H://[::1]", Proxy("socks5h", "::1", 1080)),
        ("http://a%40b:c%3Ad@p.test:1", Proxy("http", "p.test", 1, ("a@b", "c:d"))),
        ("socks5://user@p.test:1", Proxy("socks5", "p.test", 1, ("user", ""))),
    ],
)
def test_proxy_urls(url: str, expected: Proxy) -> None:
    assert parse_proxy_url(url) == expected


@pytest.mark.parametrize("url", ["https://p.test:1", "socks4://p.test", "http://:80"])
def test_unsupported_proxy_urls(url: str) -> None:
    with pytest.raises(ValueError, match="proxy URL"):
        parse_proxy_url(url)


def test_proxy_str_hides_credentials() -> None:
    proxy = parse_proxy_url("http://user:secret@[::1]:3128")
    assert str(proxy) == "http://[::1]:3128"
