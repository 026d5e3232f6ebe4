"""Following HTTP redirects during the opening handshake.

A server may answer the upgrade request with 301, 302, 303, 307 or 308 and
a ``Location``. The URL-based client entry points then try again at that
location, up to ``max_redirects`` times:

- a relative ``Location`` is resolved against the current URL, and
  ``http://`` / ``https://`` locations are read as ``ws://`` / ``wss://``;
- a redirect from a TLS connection to a plain one (``wss://`` to ``ws://``)
  is never followed: :exc:`RedirectError`;
- credentials from the URL's user info go along only while the scheme, host
  and port stay the same (a new URL may bring its own);
- one redirect more than ``max_redirects`` raises :exc:`RedirectError`, so a
  loop ends; with ``max_redirects=0`` nothing is followed and the 3xx
  answer surfaces as :exc:`ConnectionRejected`, as it always did.
"""

from __future__ import annotations

import logging
from urllib.parse import urljoin

from ._errors import ConnectionRejected, RedirectError
from ._url import parse_url

_logger = logging.getLogger("trio-websocket")

#: Default of ``max_redirects``: the limit browsers and curl use for HTTP is
#: about 20; WebSocket endpoints rarely chain more than one or two.
MAX_REDIRECTS = 10

REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})

_HTTP_SCHEMES = {"ws": "http", "wss": "https"}
_WS_SCHEMES = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}


def location(rejection: ConnectionRejected) -> str | None:
    """The ``Location`` of a redirect answer, or ``None`` if it is not one."""
    if rejection.status_code not in REDIRECT_CODES:
        return None
    for name, value in rejection.headers:
        if name.lower() == b"location" and value.strip():
            return value.strip().decode("latin-1")
    return None


def redirect_url(current: str, target: str, secure: bool) -> str:
    """The ``ws://`` or ``wss://`` URL that ``target`` points to.

    ``current`` is the URL that was redirected and ``secure`` whether its
    connection used TLS. Raises :exc:`RedirectError` for a downgrade from
    TLS or a scheme that is not HTTP or WebSocket.
    """
    scheme, _, rest = current.partition(":")
    absolute = urljoin(_HTTP_SCHEMES.get(scheme.lower(), scheme) + ":" + rest, target)
    new_scheme, _, new_rest = absolute.partition(":")
    ws_scheme = _WS_SCHEMES.get(new_scheme.lower())
    if ws_scheme is None:
        raise RedirectError(f"cannot follow a redirect to {target!r}", target)
    url = f"{ws_scheme}:{new_rest}"
    if secure and ws_scheme == "ws":
        raise RedirectError(f"refusing to follow a redirect from TLS to {url}", url)
    try:
        parse_url(url)
    except ValueError as exc:
        raise RedirectError(
            f"cannot follow a redirect to {target!r}: {exc}", url
        ) from exc
    return url


def follow_redirect(
    url: str,
    rejection: ConnectionRejected,
    secure: bool,
    followed: int,
    max_redirects: int,
) -> str | None:
    """Where to connect next after ``rejection`` of ``url``.

    Returns ``None`` when ``rejection`` is not a redirect or redirects are
    off, so that it surfaces as it is. ``followed`` counts the redirects
    already followed; one more than ``max_redirects`` is a
    :exc:`RedirectError`, as is a redirect that :func:`redirect_url` refuses.
    """
    target = location(rejection)
    if target is None or max_redirects <= 0:
        return None
    if followed >= max_redirects:
        message = f"gave up after {max_redirects} redirects; the next was to {target}"
        raise RedirectError(message, target) from rejection
    try:
        next_url = redirect_url(url, target, secure)
    except RedirectError as error:
        raise error from rejection
    _logger.debug(
        "HTTP %d redirect from %s to %s", rejection.status_code, url, next_url
    )
    return next_url
