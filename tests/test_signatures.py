"""Every public entry point keeps the signature the API spec gives it.

The expected parameter lists are copied as written from the project's spec,
``spec/API.md`` (sections "Clients", "Servers", "WebSocketRequest",
"WebSocketConnection" and "Values and errors"); CI has only this
repository, so they are written out here rather than read from the spec.
Where the spec abbreviates (``connect_websocket_url``'s ``...``,
``WebSocketServer``'s "same limits and timeouts"), the abbreviation is
spelled out.

The spec also says how the API may grow: "extensions ... are added as new
keyword-only parameters or new names, never by changing these". So every
entry point must take exactly the spec's positional parameters, and the
spec's keyword-only ones in the spec's order with the spec's defaults; any
other parameter must be keyword-only with a default, or ``**options``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest
import trio

import trio_websocket as tw

_LIMITS = "message_queue_size=1, max_message_size=2**20, receive_buffer_size=4096"
_TIMEOUTS = "connect_timeout=60, disconnect_timeout=60"
_CLIENT = f"subprotocols=None, extra_headers=None, {_LIMITS}"

SPEC: dict[str, tuple[Callable[..., object], str]] = {
    # Clients
    "open_websocket": (
        tw.open_websocket,
        f"host, port, resource, *, use_ssl, {_CLIENT}, {_TIMEOUTS}",
    ),
    "open_websocket_url": (
        tw.open_websocket_url,
        "url, ssl_context=None, *, subprotocols=None, extra_headers=None,"
        " message_queue_size=1, max_message_size=2**20, connect_timeout=60,"
        " disconnect_timeout=60, receive_buffer_size=4096",
    ),
    "connect_websocket": (
        tw.connect_websocket,
        f"nursery, host, port, resource, *, use_ssl, {_CLIENT}",
    ),
    "connect_websocket_url": (
        tw.connect_websocket_url,
        f"nursery, url, ssl_context=None, *, {_CLIENT}",
    ),
    "wrap_client_stream": (
        tw.wrap_client_stream,
        f"nursery, stream, host, resource, *, {_CLIENT}",
    ),
    # Servers
    "serve_websocket": (
        tw.serve_websocket,
        f"handler, host, port, ssl_context, *, handler_nursery=None, {_LIMITS},"
        f" {_TIMEOUTS}, task_status=trio.TASK_STATUS_IGNORED",
    ),
    "WebSocketServer": (
        tw.WebSocketServer,
        f"handler, listeners, *, handler_nursery=None, {_LIMITS}, {_TIMEOUTS}",
    ),
    "WebSocketServer.run": (
        tw.WebSocketServer.run,
        "self, *, task_status=trio.TASK_STATUS_IGNORED",
    ),
    "wrap_server_stream": (tw.wrap_server_stream, f"nursery, stream, {_LIMITS}"),
    # WebSocketRequest
    "WebSocketRequest.accept": (
        tw.WebSocketRequest.accept,
        "self, *, subprotocol=None, extra_headers=None",
    ),
    "WebSocketRequest.reject": (
        tw.WebSocketRequest.reject,
        "self, status_code, *, extra_headers=None, body=None",
    ),
    # WebSocketConnection
    "WebSocketConnection.send_message": (
        tw.WebSocketConnection.send_message,
        "self, message",
    ),
    "WebSocketConnection.get_message": (tw.WebSocketConnection.get_message, "self"),
    "WebSocketConnection.ping": (tw.WebSocketConnection.ping, "self, payload=None"),
    "WebSocketConnection.pong": (tw.WebSocketConnection.pong, "self, payload=None"),
    "WebSocketConnection.aclose": (
        tw.WebSocketConnection.aclose,
        "self, code=1000, reason=None",
    ),
    # Values and errors
    "CloseReason": (tw.CloseReason, "code, reason"),
    "ConnectionClosed": (tw.ConnectionClosed, "reason"),
    "ConnectionRejected": (tw.ConnectionRejected, "status_code, headers, body"),
    "Endpoint": (tw.Endpoint, "address, port, is_ssl"),
}

_POSITIONAL = (
    inspect.Parameter.POSITIONAL_ONLY,
    inspect.Parameter.POSITIONAL_OR_KEYWORD,
)


def spec_signature(parameters: str) -> inspect.Signature:
    """The signature of a function with these parameters, as the spec writes them."""
    namespace: dict[str, object] = {"trio": trio}
    exec(f"def entry_point({parameters}): pass", namespace)
    function = namespace["entry_point"]
    assert callable(function)
    return inspect.signature(function)


def mismatches(actual: inspect.Signature, spec: inspect.Signature) -> list[str]:
    """How ``actual`` departs from ``spec`` (see the module docs); [] if not."""
    actual_params = _unannotated(actual)
    spec_params = _unannotated(spec)
    problems = []
    positional = [p for p in actual_params if p.kind in _POSITIONAL]
    spec_positional = [p for p in spec_params if p.kind in _POSITIONAL]
    if positional != spec_positional:
        problems.append(f"positional parameters {positional} != {spec_positional}")
    spec_keywords = [p for p in spec_params if p.kind is p.KEYWORD_ONLY]
    keywords = [p for p in actual_params if p.name in spec.parameters]
    if [p for p in keywords if p.kind is p.KEYWORD_ONLY] != spec_keywords:
        problems.append(f"keyword-only parameters differ from {spec_keywords}")
    problems.extend(
        f"added parameter {p} is not keyword-only with a default"
        for p in actual_params
        if p.name not in spec.parameters and not _extension(p)
    )
    return problems


def _unannotated(signature: inspect.Signature) -> list[inspect.Parameter]:
    """The parameters, without annotations (the spec has none)."""
    return [
        parameter.replace(annotation=parameter.empty)
        for parameter in signature.parameters.values()
    ]


def _extension(parameter: inspect.Parameter) -> bool:
    if parameter.kind is parameter.VAR_KEYWORD:
        return True
    return parameter.kind is parameter.KEYWORD_ONLY and (
        parameter.default is not parameter.empty
    )


@pytest.mark.parametrize("name", SPEC)
def test_entry_point_has_the_spec_signature(name: str) -> None:
    entry_point, parameters = SPEC[name]
    actual = inspect.signature(entry_point)
    assert mismatches(actual, spec_signature(parameters)) == []


@pytest.mark.parametrize(
    "changed",
    [
        "url, *, ssl_context=None, subprotocols=None",  # ssl_context keyword-only
        "url, ssl_context=None, *, subprotocols=()",  # another default
        "url, ssl_context=None, *, extra_headers=None",  # one missing
        "url, ssl_context=None, timeout=1, *, subprotocols=None",  # positional added
        "url, ssl_context=None, *, subprotocols=None, origin",  # added, required
    ],
)
def test_a_changed_signature_is_caught(changed: str) -> None:
    spec = spec_signature("url, ssl_context=None, *, subprotocols=None")
    assert mismatches(spec_signature(changed), spec) != []


def test_keyword_order_is_checked() -> None:
    spec = spec_signature("*, subprotocols=None, extra_headers=None")
    swapped = spec_signature("*, extra_headers=None, subprotocols=None")
    assert mismatches(swapped, spec) != []
