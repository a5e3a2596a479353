"""ghgwatch app shell: the ``ghgwatch`` CLI, ``up`` with its embedded stand-ins, and status.

The top of the house: it builds the one :class:`core.Settings` object and starts the services
below it. Nothing below imports it. The dashboards the CLI exports live in :mod:`dashboards`.
"""

from ghgwatch.status import collect_status, render_status
from ghgwatch.up import UpOptions, run_up

__all__ = ["UpOptions", "collect_status", "render_status", "run_up"]
__version__ = "0.1.0"
