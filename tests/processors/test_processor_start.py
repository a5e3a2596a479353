"""The storing processor waits for its database at start instead of exiting."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg

from core.settings import Settings
from processors import Processor
from processors.storage import migrate

CREATE_AFTER_S = 2.0


async def test_the_processor_waits_for_a_database_that_comes_up_after_it(
    proc_settings: Callable[..., Settings],
) -> None:
    """Started before its database exists, the processor retries and then runs normally."""
    base = proc_settings()
    admin_url = base.db_url()
    name = f"ghgw_late_{uuid.uuid4().hex[:8]}"
    late_url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    db: dict[str, Any] = {"url": late_url, "start_timeout_s": 60.0}
    settings = proc_settings(db=db)
    run = asyncio.create_task(Processor(settings).run(timeout_s=CREATE_AFTER_S + 8))
    await asyncio.sleep(CREATE_AFTER_S)
    assert not run.done(), "the processor gave up instead of waiting for its database"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        await migrate(late_url, settings.db)
        stats = await run
        assert stats.inserted == 0
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
