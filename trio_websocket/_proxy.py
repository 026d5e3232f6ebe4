"""Which proxy a client connection goes through, if any.

The ``proxy`` parameter of the client entry points decides:

- ``None`` (the default) or ``True``: look at the environment, as curl and
  most HTTP clients do. ``wss://`` connections use ``https_proxy``, ``ws://``
  connections ``http_proxy``; both fall back to ``all_proxy``. ``no_proxy``
  lists the hosts reached directly. Lower-case names win over upper-case
  ones.
- ``False`` or ``""``: connect directly, whatever the environment says.
- A URL: always use that proxy. ``http://[user:password@]host[:port]``
  opens a tunnel with HTTP ``CONNECT``; ``socks5://`` goes through a SOCKS5
  proxy, resolving the server's name locally; ``socks5h://`` lets the proxy
  resolve it. A URL without a scheme is an HTTP proxy.

The tunnel carries both ``ws://`` and ``wss://`` (TLS runs inside it, end
to end with the server), so an HTTP proxy never sees the WebSocket traffic.

``no_proxy`` is a comma- or space-separated list. Each entry is ``*``
(everything), a host name that also matches its subdomains
(``example.com``, ``.example.com`` and ``*.example.com`` all match
``example.com`` and ``api.example.com``), an IP address, or a network in
CIDR form (``10.0.0.0/8``); ``host:port`` and ``[v6-address]:port`` entries
match that port only. Loopback hosts (``localhost`` and its subdomains,
``127.0.0.0/8``, ``::1``) never go through a proxy from the environment: a
proxy cannot reach them, and trio-websocket 0.12 (which used no proxy at all)
reached them directly. Pass ``proxy=`` a URL explicitly to proxy them anyway.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

#: What the ``proxy`` parameter accepts (see the module documentation).
ProxySetting = str | bool | None

_DEFAULT_PORTS = {"http": 80, "socks5": 1080, "socks5h": 1080}


@dataclass(frozen=True)
class Proxy:
    """A proxy to tunnel through: its kind, address and credentials."""

    scheme: str
    host: str
    port: int
    credentials: tuple[str, str] | None = None

    def __str__(self) -> str:
        """The proxy's URL without credentials, for messages and logs."""
        return f"{self.scheme}://{authority(self.host, self.port)}"


def authority(host: str, port: int) -> str:
    """``host:port``, with an IPv6 literal in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def basic_auth(credentials: tuple[str, str]) -> str:
    """An HTTP ``Basic`` credentials value (RFC 7617, UTF-8)."""
    token = base64.b64encode(":".join(credentials).encode()).decode("ascii")
    return f"Basic {token}"


def user_info(username: str | None, password: str | None) -> tuple[str, str] | None:
    """Percent-decoded credentials from a URL's user info, if it has any."""
    if username is None:
        return None
    return unquote(username), unquote(password or "")


def parse_proxy_url(url: str) -> Proxy:
    """Read a proxy URL; an unsupported scheme is a :exc:`ValueError`."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(
            f"proxy URL scheme must be http, socks5 or socks5h, not {scheme!r}"
        )
    if not parts.hostname:
        raise ValueError(f"proxy URL has no host: {url!r}")
    return Proxy(
        scheme,
        parts.hostname,
        parts.port or _DEFAULT_PORTS[scheme],
        user_info(parts.username, parts.password),
    )


def choose_proxy(
    setting: ProxySetting,
    host: str,
    port: int,
    secure: bool,
    environ: Mapping[str, str] = os.environ,
) -> Proxy | None:
    """The proxy to reach ``host``:``port`` through, or ``None`` for direct."""
    if setting is False or setting == "":
        return None
    if setting is None or setting is True:
        return _environment_proxy(host, port, secure, environ)
    return parse_proxy_url(setting)


def _environment_proxy(
    host: str, port: int, secure: bool, environ: Mapping[str, str]
) -> Proxy | None:
    names = ("https_proxy" if secure else "http_proxy", "all_proxy")
    url = next(filter(None, (_getenv(environ, name) for name in names)), None)
    if url is None or is_loopback(host):
        return None
    if bypasses_proxy(host, port, _getenv(environ, "no_proxy")):
        return None
    return parse_proxy_url(url)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine: ``localhost`` or a loopback address."""
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _getenv(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name)
    if value is None and not (name == "http_proxy" and "REQUEST_METHOD" in environ):
        # Under CGI, HTTP_PROXY comes from a request header ("httpoxy").
        value = environ.get(name.upper())
    return (value or "").strip()


def bypasses_proxy(host: str, port: int, no_proxy: str) -> bool:
    """Whether ``no_proxy`` says to reach ``host``:``port`` directly."""
    host = host.lower().rstrip(".")
    for entry in re.split(r"[\s,]+", no_proxy.lower()):
        if entry == "*":
            return True
        pattern, entry_port = _split_port(entry)
        if pattern and entry_port in (None, port) and _host_matches(host, pattern):
            return True
    return False


def _split_port(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):
        address, _, rest = entry[1:].partition("]")
        return address, int(rest[1:]) if rest[1:].isdigit() else None
    name, colon, port = entry.rpartition(":")
    if colon and ":" not in name and port.isdigit():
        return name, int(port)
    return entry, None


def _host_matches(host: str, pattern: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        domain = pattern.lstrip("*").lstrip(".").rstrip(".")
        return bool(domain) and (host == domain or host.endswith("." + domain))
    try:
        return address in ipaddress.ip_network(pattern, strict=False)
    except ValueError:
        return False
