"""Unit tests of the package's values: close reasons, errors, endpoints, URLs."""

from __future__ import annotations

import copy
import ipaddress
import pickle
import re
from functools import partial
from typing import Any

import pytest
import trio
from conftest import needs_ipv6

import trio_websocket
from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    DisconnectionTimeout,
    Endpoint,
    HandshakeError,
    open_websocket_url,
)

# -- CloseReason --------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (1000, "NORMAL_CLOSURE"),
        (1001, "GOING_AWAY"),
        (1002, "PROTOCOL_ERROR"),
        (1003, "UNSUPPORTED_DATA"),
        (1005, "NO_STATUS_RCVD"),
        (1006, "ABNORMAL_CLOSURE"),
        (1007, "INVALID_FRAME_PAYLOAD_DATA"),
        (1008, "POLICY_VIOLATION"),
        (1009, "MESSAGE_TOO_BIG"),
        (1010, "MANDATORY_EXT"),
        (1011, "INTERNAL_ERROR"),
        (1012, "SERVICE_RESTART"),
        (1013, "TRY_AGAIN_LATER"),
        (1015, "TLS_HANDSHAKE"),
    ],
)
def test_close_reason_standard_names(code: int, name: str) -> None:
    reason = CloseReason(code, "why")
    assert reason.code == code
    assert reason.name == name
    assert reason.reason == "why"


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (1004, "RFC_RESERVED"),
        (1016, "RFC_RESERVED"),
        (2999, "RFC_RESERVED"),
        (3000, "IANA_RESERVED"),
        (3999, "IANA_RESERVED"),
        (4000, "PRIVATE_RESERVED"),
        (4999, "PRIVATE_RESERVED"),
        (0, "INVALID_CODE"),
        (999, "INVALID_CODE"),
        (5000, "INVALID_CODE"),
        (-1, "INVALID_CODE"),
    ],
)
def test_close_reason_range_names(code: int, name: str) -> None:
    assert CloseReason(code, None).name == name


def test_close_reason_reason_may_be_none() -> None:
    assert CloseReason(1000, None).reason is None


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        (CloseReason(1000, "bye"), ("1000", "NORMAL_CLOSURE", "bye")),
        (CloseReason(4321, None), ("4321", "PRIVATE_RESERVED", "None")),
    ],
)
def test_close_reason_repr_shows_code_name_and_reason(
    reason: CloseReason, expected: tuple[str, str, str]
) -> None:
    text = repr(reason)
    assert text.startswith("CloseReason")
    for part in expected:
        assert part in text


# -- ConnectionClosed -----------------------------------------------------------


def test_connection_closed_carries_its_reason() -> None:
    reason = CloseReason(1001, "going")
    error = ConnectionClosed(reason)
    assert error.reason is reason
    assert isinstance(error, Exception)
    assert not isinstance(error, HandshakeError)


def test_connection_closed_reason_may_be_none() -> None:
    error = ConnectionClosed(None)
    assert error.reason is None
    assert "None" in str(error)
    assert repr(error).startswith("ConnectionClosed")


def test_connection_closed_str_and_repr_show_the_reason() -> None:
    error = ConnectionClosed(CloseReason(1009, "too big"))
    assert "MESSAGE_TOO_BIG" in str(error)
    assert "too big" in str(error)
    assert repr(error).startswith("ConnectionClosed")
    assert "1009" in repr(error)


def test_connection_closed_reason_is_assignable() -> None:
    error = ConnectionClosed(None)
    error.reason = CloseReason(1011, "oops")
    assert error.reason.code == 1011
    assert "INTERNAL_ERROR" in str(error)


class _ClosedWithoutSuper(ConnectionClosed):
    """A subclass in the style of real dependents: no ``super().__init__``."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        self.reason = CloseReason(4001, detail)


def test_subclass_without_super_init_works() -> None:
    error = _ClosedWithoutSuper("custom")
    assert error.reason is not None
    assert error.reason.code == 4001
    assert "PRIVATE_RESERVED" in str(error)
    assert "custom" in str(error)
    assert repr(error).startswith("_ClosedWithoutSuper")
    with pytest.raises(ConnectionClosed) as caught:
        raise error
    assert caught.value.reason == CloseReason(4001, "custom")


# -- Handshake errors -------------------------------------------------------------


@pytest.mark.parametrize(
    "error_type", [ConnectionTimeout, DisconnectionTimeout, ConnectionRejected]
)
def test_handshake_error_hierarchy(error_type: type[Exception]) -> None:
    assert issubclass(error_type, HandshakeError)
    assert issubclass(HandshakeError, Exception)
    assert not issubclass(error_type, ConnectionClosed)


def test_connection_rejected_attributes() -> None:
    headers = [(b"content-type", b"text/plain"), (b"x-why", b"nope")]
    error = ConnectionRejected(403, headers, b"forbidden")
    assert error.status_code == 403
    assert list(error.headers) == headers
    assert error.body == b"forbidden"
    assert "403" in str(error)
    assert "403" in repr(error)
    assert isinstance(error, HandshakeError)


def test_connection_rejected_body_may_be_none() -> None:
    assert ConnectionRejected(400, [], None).body is None


# -- Pickle and copy -----------------------------------------------------------------

_SAMPLES: list[Any] = [
    CloseReason(1000, "done"),
    CloseReason(4500, None),
    ConnectionClosed(CloseReason(1006, None)),
    ConnectionClosed(None),
    ConnectionRejected(404, [(b"server", b"x")], b"missing"),
    HandshakeError("bad response"),
    ConnectionTimeout("slow"),
    DisconnectionTimeout("slower"),
]


def _same_value(original: Any, clone: Any) -> None:
    assert type(clone) is type(original)
    assert clone is not original
    if isinstance(original, CloseReason):
        assert (clone.code, clone.name, clone.reason) == (
            original.code,
            original.name,
            original.reason,
        )
        assert clone == original
    elif isinstance(original, ConnectionClosed):
        assert clone.reason == original.reason
        assert str(clone) == str(original)
    elif isinstance(original, ConnectionRejected):
        assert clone.status_code == original.status_code
        assert list(clone.headers) == list(original.headers)
        assert clone.body == original.body
    else:
        assert clone.args == original.args


def _pickle_round_trip(value: Any) -> Any:
    return pickle.loads(pickle.dumps(value))


@pytest.mark.parametrize("value", _SAMPLES, ids=repr)
@pytest.mark.parametrize(
    "duplicate",
    [copy.copy, copy.deepcopy, _pickle_round_trip],
    ids=["copy", "deepcopy", "pickle"],
)
def test_values_survive_copy_and_pickle(value: Any, duplicate: Any) -> None:
    _same_value(value, duplicate(value))


def test_subclass_without_super_init_survives_copy() -> None:
    clone = copy.copy(_ClosedWithoutSuper("copied"))
    assert clone.reason == CloseReason(4001, "copied")


# -- Endpoint -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "port", "is_ssl", "url"),
    [
        ("127.0.0.1", 8000, False, "ws://127.0.0.1:8000"),
        ("127.0.0.1", 8443, True, "wss://127.0.0.1:8443"),
        ("10.1.2.3", 80, False, "ws://10.1.2.3"),
        ("10.1.2.3", 443, True, "wss://10.1.2.3"),
        ("10.1.2.3", 443, False, "ws://10.1.2.3:443"),
        ("10.1.2.3", 80, True, "wss://10.1.2.3:80"),
        ("::1", 9000, False, "ws://[::1]:9000"),
        ("::1", 443, True, "wss://[::1]"),
        ("fe80::1", 80, False, "ws://[fe80::1]"),
    ],
)
def test_endpoint_url(address: str, port: int, is_ssl: bool, url: str) -> None:
    assert Endpoint(address, port, is_ssl).url == url


@pytest.mark.parametrize(
    ("address", "version"), [("127.0.0.1", 4), ("::1", 6), ("2001:db8::5", 6)]
)
def test_endpoint_address_is_an_ipaddress_object(address: str, version: int) -> None:
    endpoint = Endpoint(address, 1234, False)
    assert endpoint.address == ipaddress.ip_address(address)
    assert endpoint.address.version == version
    assert endpoint.port == 1234
    assert endpoint.is_ssl is False


def test_endpoint_repr_is_readable() -> None:
    text = repr(Endpoint("127.0.0.1", 8000, True))
    assert text.startswith("Endpoint")
    assert "127.0.0.1" in text
    assert "8000" in text
    assert "True" in text


def test_endpoint_equality() -> None:
    assert Endpoint("127.0.0.1", 80, False) == Endpoint("127.0.0.1", 80, False)
    assert Endpoint("127.0.0.1", 80, False) != Endpoint("127.0.0.1", 81, False)
    assert Endpoint("127.0.0.1", 80, False) != Endpoint("127.0.0.1", 80, True)


# -- URL parsing through open_websocket_url ---------------------------------------


class _RequestRecorder:
    """A one-shot TCP server that records the first request's head."""

    def __init__(self) -> None:
        self.head = b""
        self.received = trio.Event()

    async def handle(self, stream: trio.SocketStream) -> None:
        with trio.move_on_after(5):
            while b"\r\n\r\n" not in self.head:
                data = await stream.receive_some(4096)
                if not data:
                    break
                self.head += data
        self.received.set()
        # Refuse the upgrade so that the client fails fast.
        await stream.send_all(b"HTTP/1.1 418 I'm a teapot\r\nContent-Length: 0\r\n\r\n")
        await stream.aclose()

    @property
    def request_line(self) -> str:
        return self.head.split(b"\r\n", 1)[0].decode()


async def _request_target(url_template: str, host: str = "127.0.0.1") -> str:
    """Open ``url_template`` (with ``{port}``) and return the request target."""
    recorder = _RequestRecorder()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, recorder.handle, 0, host=host)
        )
        port = listeners[0].socket.getsockname()[1]
        with trio.fail_after(5), pytest.raises(ConnectionRejected) as caught:
            async with open_websocket_url(url_template.format(port=port)):
                pass  # pragma: no cover
        assert caught.value.status_code == 418
        nursery.cancel_scope.cancel()
    method, target, version = recorder.request_line.split(" ")
    assert (method, version) == ("GET", "HTTP/1.1")
    return target


@pytest.mark.parametrize(
    "url", ["http://example.com/", "https://example.com/", "ftp://x/", "example.com"]
)
async def test_url_with_other_scheme_is_a_value_error(url: str) -> None:
    with trio.fail_after(5), pytest.raises(ValueError):
        async with open_websocket_url(url):
            pass  # pragma: no cover


@pytest.mark.parametrize(
    ("template", "target"),
    [
        ("ws://127.0.0.1:{port}", "/"),
        ("ws://127.0.0.1:{port}/", "/"),
        ("ws://127.0.0.1:{port}/chat/room", "/chat/room"),
        ("ws://127.0.0.1:{port}/feed?a=1&b=two", "/feed?a=1&b=two"),
        ("ws://127.0.0.1:{port}?only=query", "/?only=query"),
    ],
)
async def test_url_path_and_query(template: str, target: str) -> None:
    assert await _request_target(template) == target


@needs_ipv6
async def test_url_ipv6_literal() -> None:
    target = await _request_target("ws://[::1]:{port}/six?x=y", host="::1")
    assert target == "/six?x=y"


# -- Module constants and exports ---------------------------------------------------


def test_module_constants_keep_their_values() -> None:
    assert trio_websocket.CONN_TIMEOUT == 60
    assert trio_websocket.MESSAGE_QUEUE_SIZE == 1
    assert trio_websocket.MAX_MESSAGE_SIZE == 2**20
    assert trio_websocket.RECEIVE_BYTES == 4096


def test_version_stays_below_one() -> None:
    match = re.match(r"(\d+)\.(\d+)", trio_websocket.__version__)
    assert match is not None, trio_websocket.__version__
    major, minor = int(match.group(1)), int(match.group(2))
    assert major == 0
    assert minor >= 13


_SPEC_NAMES = [
    "open_websocket",
    "open_websocket_url",
    "connect_websocket",
    "connect_websocket_url",
    "wrap_client_stream",
    "wrap_server_stream",
    "serve_websocket",
    "WebSocketServer",
    "WebSocketRequest",
    "WebSocketConnection",
    "Endpoint",
    "CloseReason",
    "ConnectionClosed",
    "HandshakeError",
    "ConnectionRejected",
    "ConnectionTimeout",
    "DisconnectionTimeout",
    "__version__",
]


@pytest.mark.parametrize("name", _SPEC_NAMES)
def test_spec_name_is_exported(name: str) -> None:
    assert hasattr(trio_websocket, name)
    assert name in trio_websocket.__all__


def test_star_import_gives_every_spec_name() -> None:
    namespace: dict[str, object] = {}
    exec("from trio_websocket import *", namespace)
    missing = [name for name in _SPEC_NAMES if name not in namespace]
    assert missing == []
