"""run_simulation publishes to the real Mosquitto exactly what it counts, and stops when told."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import Counter
from collections.abc import Awaitable, Callable

import aiomqtt
import pytest

from adapters.ports import free_port
from core.errors import BrokerUnavailable
from core.settings import Settings
from ghgwatch.embedded import ManagedProcess
from sensors_sim import SimulationConfig, run_simulation
from sensors_sim.publisher import parse_mqtt_url
from wire.schemas import SourceKind

RECEIVE_DEADLINE_S = 20.0


class _Subscriber:
    """Counts every message under a topic root on the real broker, per topic."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ready = asyncio.Event()
        self.arrived = asyncio.Event()
        self.got: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> _Subscriber:
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(10):
            await self.ready.wait()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        host, port, _tls = parse_mqtt_url(self.settings.mqtt_url())
        async with aiomqtt.Client(host, port) as client:
            await client.subscribe(f"{self.settings.mqtt.topic_root}/#", qos=1)
            self.ready.set()
            async for msg in client.messages:
                self.got[str(msg.topic)] += 1
                self.arrived.set()

    async def wait_for(self, count: int) -> int:
        """Wait (bounded) until `count` messages arrived; return how many did."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(RECEIVE_DEADLINE_S):
                while self.got.total() < count:
                    self.arrived.clear()
                    await self.arrived.wait()
        return self.got.total()


async def test_every_counted_message_reaches_a_subscriber(
    own_mosquitto: Callable[..., Awaitable[ManagedProcess]], test_id: str
) -> None:
    """A subscriber receives exactly the messages the simulator counted, valid and invalid."""
    # A private broker with deep queues: the machine's default (1000 queued per client) drops
    # a fast burst before a subscriber takes it, which is the broker's loss, not ours.
    broker = await own_mosquitto()
    sim_settings = Settings(
        mqtt={"url": f"mqtt://127.0.0.1:{broker.port}", "topic_root": f"s{test_id}/v1"}
    )
    cfg = SimulationConfig(
        devices_per_kind=20,
        rate=math.inf,
        max_messages=3000,
        batch=False,
        invalid_rate=0.1,
        progress=False,
    )
    async with _Subscriber(sim_settings) as sub:
        stats = await run_simulation(sim_settings, cfg)
        received = await sub.wait_for(stats.messages)
    assert stats.messages == 3000
    assert stats.acked == stats.messages
    assert stats.valid_messages + stats.invalid_messages == stats.messages
    assert stats.invalid_messages > 0
    assert stats.valid_readings == stats.valid_messages
    assert received == stats.messages
    assert set(SourceKind) == set(stats.by_kind)
    assert sum(stats.by_reason.values()) == stats.invalid_messages


async def test_batches_carry_the_counted_readings(sim_settings: Settings) -> None:
    """Batch messages are delivered one per device tick and carry channels x samples readings."""
    cfg = SimulationConfig(
        kinds=(SourceKind.CEMS,),
        devices_per_kind=10,
        rate=2000.0,
        max_messages=200,
        batch=True,
        samples_per_message=3,
        sample_interval_s=0.01,
        progress=False,
    )
    async with _Subscriber(sim_settings) as sub:
        stats = await run_simulation(sim_settings, cfg)
        received = await sub.wait_for(stats.messages)
    assert stats.messages == 200 == received
    assert stats.valid_readings == 200 * 8 * 3


async def test_natural_intervals_run_until_the_duration(sim_settings: Settings) -> None:
    """Without a rate or message cap the run ends at its duration, having sent something."""
    cfg = SimulationConfig(devices_per_kind=5, duration_s=1.5, progress=False)
    async with asyncio.timeout(15):
        stats = await run_simulation(sim_settings, cfg)
    assert stats.messages > 0
    assert stats.acked == stats.messages
    assert stats.elapsed_s >= 1.5


async def test_stop_event_ends_the_run(sim_settings: Settings) -> None:
    """Setting the stop event ends an unbounded run and every sent message is acknowledged."""
    stop = asyncio.Event()
    cfg = SimulationConfig(devices_per_kind=5, rate=500.0, progress=False)
    task = asyncio.create_task(run_simulation(sim_settings, cfg, stop=stop))
    await asyncio.sleep(0.5)
    stop.set()
    async with asyncio.timeout(15):
        stats = await task
    assert stats.messages > 0
    assert stats.acked == stats.messages


async def test_unreachable_broker_is_broker_unavailable() -> None:
    """With nothing listening on the broker port the run fails with BrokerUnavailable."""
    settings = Settings(mqtt={"url": f"mqtt://127.0.0.1:{free_port()}", "connect_timeout_s": 2.0})
    cfg = SimulationConfig(devices_per_kind=1, max_messages=1, progress=False)
    with pytest.raises(BrokerUnavailable):
        await run_simulation(settings, cfg)


def test_cli_options_build_the_config() -> None:
    """The CLI's comma list of kinds and options become a config; unknown kinds are refused."""
    from core.errors import ConfigurationError

    cfg = SimulationConfig.from_cli(
        kinds="mine, cems",
        devices_per_kind=3,
        rate=None,
        duration_s=2.0,
        max_messages=None,
        batch=False,
        invalid_rate=0.05,
        seed=9,
        progress=False,
    )
    assert cfg.kinds == (SourceKind.MINE, SourceKind.CEMS)
    assert cfg.invalid_rate == 0.05
    with pytest.raises(ConfigurationError):
        SimulationConfig.from_cli(
            kinds="mine,boiler",
            devices_per_kind=3,
            rate=None,
            duration_s=None,
            max_messages=None,
            batch=True,
            invalid_rate=0.0,
            seed=1,
            progress=False,
        )
