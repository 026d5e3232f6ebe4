"""The ``trio-websocket`` command line: :func:`run` parses it and dispatches.

``trio-websocket connect URL`` is an interactive client (see
:mod:`trio_websocket.cli._client`), ``trio-websocket serve`` an echo or
chat server with a browser demo page (see :mod:`trio_websocket.cli._server`).
The parser is in :mod:`trio_websocket.cli._parser`, what the commands share
in :mod:`trio_websocket.cli._common`.

Exit status: 0 after a normal close, 1 after an error or an abnormal close
(including a server that cannot listen: port taken, host not resolved),
2 for usage errors (bad options, a URL that is not ``ws://`` or ``wss://``),
130 when interrupted with Ctrl-C outside the interactive prompt.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._common import EXIT_INTERRUPTED, EXIT_USAGE, UsageError, report_error
from ._parser import build_parser


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version or a usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        if args.command == "connect":
            from ._client import connect_command

            return connect_command(args)
        from ._server import serve_command

        return serve_command(args)
    except UsageError as exc:
        report_error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
