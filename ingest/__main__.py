"""``python -m ingest``: run the bridge with settings from the environment until stopped.

SIGINT and SIGTERM only set the stop event (a clean stop); exits 2 on a fatal error (refused
credentials, bad configuration) and 1 on any other ghgwatch error.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from core.errors import FatalError, GhgwatchError
from core.logs import configure_logging
from core.settings import load_settings
from ingest.bridge import Bridge

EXIT_ERROR = 1
EXIT_FATAL = 2


async def _serve() -> None:
    # Like the CLI's --config: an optional TOML file under the environment's settings.
    config = os.environ.get("GHGWATCH_CONFIG")
    settings = load_settings(Path(config) if config else None)
    configure_logging(settings.log)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await Bridge(settings).run(stop=stop)


def main() -> int:
    """Run the bridge; returns the process exit status."""
    try:
        asyncio.run(_serve())
    except FatalError as exc:
        print(f"fatal: {exc}", file=sys.stderr)
        return EXIT_FATAL
    except GhgwatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
