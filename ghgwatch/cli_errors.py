"""How every ``ghgwatch`` command ends on an error: one line on stderr and an exit status.

A :class:`~core.errors.FatalError` (refused credentials, a bad configuration: retrying will
not help) exits with status 2, any other ghgwatch error with status 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer

from core.errors import FatalError, GhgwatchError

__all__ = ["exit_on_error"]


@contextmanager
def exit_on_error() -> Iterator[None]:
    """Turn a ghgwatch error raised inside into its message and exit status."""
    try:
        yield
    except FatalError as exc:
        typer.secho(f"fatal: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    except GhgwatchError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
