"""The simulator's live progress display (rich): sent/s, acknowledged, invalid, per kind."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.live import Live
from rich.table import Table

from sensors_sim.simulator import SimulationStats

__all__ = ["REFRESH_PER_S", "progress_display"]

REFRESH_PER_S = 4.0


def _render(stats: SimulationStats, acked: Callable[[], int], started: float) -> Table:
    elapsed = max(time.monotonic() - started, 1e-9)
    table = Table(
        title=f"ghgwatch simulate: {stats.messages / elapsed:,.0f} msg/s, "
        f"acked {acked():,}, invalid {stats.invalid_messages:,}",
        title_justify="left",
    )
    for col in ("kind", "messages", "readings", "invalid"):
        table.add_column(col, justify="left" if col == "kind" else "right")
    for kind, c in sorted(stats.by_kind.items()):
        table.add_row(kind.value, f"{c.messages:,}", f"{c.readings:,}", f"{c.invalid:,}")
    table.add_row(
        "total", f"{stats.messages:,}", f"{stats.valid_readings:,}", f"{stats.invalid_messages:,}"
    )
    return table


@contextmanager
def progress_display(
    stats: SimulationStats, acked: Callable[[], int], *, enabled: bool
) -> Iterator[None]:
    """Show a live table of ``stats`` on stderr while the block runs (nothing if disabled).

    Args:
        stats: the counters the simulation updates.
        acked: returns the number of acknowledged messages.
        enabled: False runs the block without any display.
    """
    if not enabled:
        yield
        return
    started = time.monotonic()
    with Live(
        get_renderable=lambda: _render(stats, acked, started),
        console=Console(stderr=True),
        refresh_per_second=REFRESH_PER_S,
        transient=False,
    ):
        yield
