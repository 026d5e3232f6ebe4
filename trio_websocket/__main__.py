"""``python -m trio_websocket`` and the ``trio-websocket`` console script."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .cli import run


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``) and exit."""
    sys.exit(run(argv))


if __name__ == "__main__":
    main()
