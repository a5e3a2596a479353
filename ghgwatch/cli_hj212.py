"""``ghgwatch hj212``: the HJ 212-2017 gateway service, and ``hj212 hash-password``."""

from __future__ import annotations

import asyncio
import getpass
from typing import Annotated

import typer

from adapters.pg import wait_for_database
from core.settings import Settings
from core.stopping import run_until_stopped
from gateway.registry_directory import open_directory, uses_registry
from gateway.server import Gateway
from ghgwatch.cli_errors import exit_on_error
from registry.credentials import hash_password

__all__ = ["hj212_app"]

hj212_app = typer.Typer(
    help="The HJ 212-2017 gateway for data loggers (TCP).", invoke_without_command=True
)


@hj212_app.callback()
def serve(ctx: typer.Context) -> None:
    """Run the gateway until Ctrl-C (SIGINT/SIGTERM stop it cleanly).

    Loggers are looked up in ``gateway.loggers`` when that lists any, else in the device
    registry (``ghgwatch stations add ... --hj212-mn MN --hj212-password``), held in memory
    and reloaded on change (see :mod:`gateway.registry_directory`)."""
    if ctx.invoked_subcommand is not None:
        return
    settings = Settings()  # the root callback loaded them and remembered --config

    async def main(stop: asyncio.Event) -> None:
        if uses_registry(settings):  # MN -> device in the registry, PW against its hash
            await wait_for_database(settings.db_url(), settings.db.start_timeout_s)
        # a cached registry view (reloaded on NOTIFY): a frame costs no database query
        async with open_directory(
            settings, start_timeout_s=settings.ingest.registry_start_timeout_s
        ) as directory:
            await Gateway(settings, directory).run(stop=stop)

    with exit_on_error():
        run_until_stopped(main)


@hj212_app.command("hash-password")
def hash_password_command(
    password: Annotated[
        str | None, typer.Option(help="The logger's PW; asked when omitted")
    ] = None,
) -> None:
    """Print the hash of a logger's PW for ``gateway.loggers.<MN>.password_hash``."""
    pw = password if password is not None else getpass.getpass("logger PW: ")
    typer.echo(hash_password(pw))
