"""Run a simulation: pace the generator (natural intervals or a token bucket) and publish it."""

from __future__ import annotations

import asyncio
import math
import time

import structlog

from core.settings import Settings
from sensors_sim.display import progress_display
from sensors_sim.publisher import MqttPublisher
from sensors_sim.simulator import SimulationConfig, SimulationStats, Simulator

__all__ = ["DRAIN_TIMEOUT_S", "run_simulation"]

log = structlog.get_logger(__name__)

TICK_S = 0.005  # token-bucket pacing step at a target rate
IDLE_MAX_S = 0.1  # longest sleep between checks of the stop conditions
MAX_BURST_S = 1.0  # bucket depth: a stall of up to this long is caught up afterwards
DRAIN_TIMEOUT_S = 15.0  # waiting for the broker's last acknowledgements


async def run_simulation(
    settings: Settings, cfg: SimulationConfig, *, stop: asyncio.Event | None = None
) -> SimulationStats:
    """Publish simulated readings until the duration, message cap or stop event ends it.

    1. Devices are paced by their natural intervals, or by a token bucket at ``cfg.rate``
       messages/s (``inf``: as fast as the broker acknowledges).
    2. At most ``cfg.max_inflight`` QoS 1 publishes are unacknowledged at any time.
    3. With ``cfg.events_every_s``, a release, a sensor fault or a silent device is injected
       on a mine sensor in turn (:mod:`sensors_sim.events`), each logged as it starts.
    4. On stop, outstanding acknowledgements are awaited for up to ``DRAIN_TIMEOUT_S``;
       ``stats.acked`` says how many arrived.

    Args:
        settings: the ghgwatch settings (MQTT URL, credentials, topic root).
        cfg: what to simulate and when to stop.
        stop: set it to end the run early.

    Returns:
        What was sent: messages, valid readings, invalid messages per expected reason.

    Raises:
        BrokerUnavailable: the broker cannot be reached or the connection is lost.
        FatalError: the broker refused the simulator's credentials.
    """
    stop = stop or asyncio.Event()
    sim = Simulator(cfg, settings.mqtt.topic_root)
    stats = SimulationStats()
    publisher = MqttPublisher(
        settings.mqtt,
        settings.mqtt_url(),
        client_id=cfg.client_id,
        max_inflight=cfg.max_inflight,
        qos=cfg.qos,
    )
    unlimited = cfg.rate is not None and math.isinf(cfg.rate)
    async with publisher:
        log.info(
            "simulation started",
            devices=sim.device_count,
            kinds=[k.value for k in cfg.kinds],
            rate=cfg.rate,
            batch=cfg.batch,
        )
        with progress_display(stats, lambda: publisher.acked, enabled=cfg.progress):
            started = last = time.monotonic()
            deadline = started + cfg.duration_s if cfg.duration_s is not None else math.inf
            tokens = 0.0
            while not stop.is_set():
                mono = time.monotonic()
                if mono >= deadline:
                    break
                if cfg.max_messages is not None and stats.messages >= cfg.max_messages:
                    break
                now = time.time()
                if cfg.rate is None:
                    messages = sim.due(now)
                else:
                    if unlimited:
                        budget = cfg.max_inflight
                    else:
                        depth = max(cfg.rate * MAX_BURST_S, 1.0)
                        tokens = min(tokens + cfg.rate * (mono - last), depth)
                        budget = int(tokens)
                    messages = sim.take(now, budget)
                    tokens -= len(messages)
                last = mono
                if cfg.max_messages is not None:
                    messages = messages[: cfg.max_messages - stats.messages]
                for msg in messages:
                    await publisher.publish(msg.topic, msg.payload)
                    stats.record(msg)
                for event, device_id in sim.started_events(now):
                    stats.events += 1
                    log.info(
                        "simulated event injected",
                        what=event.kind.value,
                        device_id=device_id,
                        lasts_s=round(event.end_s - event.start_s),
                    )
                if cfg.rate is None:
                    wait = min(max(sim.next_due_s() - time.time(), 0.0), IDLE_MAX_S)
                else:
                    wait = 0.0 if unlimited else TICK_S
                await asyncio.sleep(wait)
            stats.elapsed_s = time.monotonic() - started
        if not await publisher.drain(DRAIN_TIMEOUT_S):
            log.warning(
                "simulation ended with unacknowledged messages", inflight=publisher.inflight
            )
        stats.acked = publisher.acked
    log.info("simulation finished", messages=stats.messages, acked=stats.acked)
    return stats
