"""``python -m processors``: run the storing processor with settings from the environment.

The same as ``ghgwatch processor [--max-readings N] [--timeout-s S]``: settings come from
``GHGWATCH_*`` variables (and ``GHGWATCH_CONFIG``), SIGINT/SIGTERM stop it cleanly.
"""

from __future__ import annotations

import sys

from ghgwatch.cli import app


def main() -> None:
    """Run the ``processor`` command of the CLI with this process's arguments."""
    app(["processor", *sys.argv[1:]], prog_name="python -m processors")


if __name__ == "__main__":
    main()
