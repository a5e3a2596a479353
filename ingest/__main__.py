"""``python -m ingest``: run the bridge with settings from the environment until stopped.

SIGINT and SIGTERM set the stop event (a clean stop; one overrunning its grace, or a second
signal, exits 3: core.stopping); exits 2 on a fatal error (refused credentials, bad
configuration) and 1 on any other ghgwatch error.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from core.errors import FatalError, GhgwatchError
from core.logs import configure_logging
from core.settings import load_settings
from core.stopping import run_until_stopped
from ingest.bridge import Bridge

EXIT_ERROR = 1
EXIT_FATAL = 2


async def _serve(stop: asyncio.Event) -> None:
    # Like the CLI's --config: an optional TOML file under the environment's settings.
    config = os.environ.get("GHGWATCH_CONFIG")
    settings = load_settings(Path(config) if config else None)
    configure_logging(settings.log)
    await Bridge(settings).run(stop=stop)


def main() -> int:
    """Run the bridge; returns the process exit status."""
    try:
        run_until_stopped(_serve)
    except FatalError as exc:
        print(f"fatal: {exc}", file=sys.stderr)
        return EXIT_FATAL
    except GhgwatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
