"""``ghgwatch hj212``: the HJ 212-2017 gateway service, and ``hj212 hash-password``."""

from __future__ import annotations

import asyncio
import getpass
import signal
from typing import Annotated

import typer

from core.errors import FatalError, GhgwatchError
from core.settings import Settings
from gateway.directory import hash_password
from gateway.server import Gateway

__all__ = ["hj212_app"]

hj212_app = typer.Typer(
    help="The HJ 212-2017 gateway for data loggers (TCP).", invoke_without_command=True
)


@hj212_app.callback()
def serve(ctx: typer.Context) -> None:
    """Run the gateway until Ctrl-C (SIGINT/SIGTERM stop it cleanly)."""
    if ctx.invoked_subcommand is not None:
        return
    settings = Settings()  # the root callback loaded them and remembered --config

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await Gateway(settings).run(stop=stop)

    try:
        asyncio.run(main())
    except FatalError as exc:
        typer.secho(f"fatal: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    except GhgwatchError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc


@hj212_app.command("hash-password")
def hash_password_command(
    password: Annotated[
        str | None, typer.Option(help="The logger's PW; asked when omitted")
    ] = None,
) -> None:
    """Print the hash of a logger's PW for ``gateway.loggers.<MN>.password_hash``."""
    pw = password if password is not None else getpass.getpass("logger PW: ")
    typer.echo(hash_password(pw))
