"""``ghgwatch hj212``: the HJ 212-2017 gateway service, and ``hj212 hash-password``."""

from __future__ import annotations

import asyncio
import getpass
from typing import Annotated

import asyncpg
import typer

from adapters.pg import wait_for_database
from core.settings import Settings
from core.stopping import run_until_stopped
from gateway.registry_directory import RegistryDirectory
from gateway.server import Gateway
from ghgwatch.cli_errors import exit_on_error
from registry import RegistryStore, verify_password
from registry.credentials import hash_password

__all__ = ["hj212_app"]

hj212_app = typer.Typer(
    help="The HJ 212-2017 gateway for data loggers (TCP).", invoke_without_command=True
)


@hj212_app.callback()
def serve(ctx: typer.Context) -> None:
    """Run the gateway until Ctrl-C (SIGINT/SIGTERM stop it cleanly).

    Loggers are looked up in ``gateway.loggers`` when that lists any, else in the device
    registry (``ghgwatch stations add ... --hj212-mn MN --hj212-password``)."""
    if ctx.invoked_subcommand is not None:
        return
    settings = Settings()  # the root callback loaded them and remembered --config

    async def main(stop: asyncio.Event) -> None:
        if settings.gateway.loggers:  # loggers listed in the settings: no registry needed
            await Gateway(settings).run(stop=stop)
            return
        # else the device registry: MN -> device, PW against its stored hash
        await wait_for_database(settings.db_url(), settings.db.start_timeout_s)
        pool = await asyncpg.create_pool(settings.db_url(), min_size=1, max_size=2)
        try:
            directory = RegistryDirectory(RegistryStore(pool), verify_password)
            await Gateway(settings, directory).run(stop=stop)
        finally:
            await pool.close()

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
