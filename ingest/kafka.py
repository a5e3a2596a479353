"""Kafka adapter: client options, topic creation and the one place aiokafka errors are mapped."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    NodeNotReadyError,
    RequestTimedOutError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)

from ghgwatch.errors import BrokerUnavailable, ConfigurationError, FatalError
from ghgwatch.settings import KafkaSettings

__all__ = [
    "client_options",
    "ensure_topics",
    "kafka_errors",
    "make_producer",
]

log = structlog.get_logger(__name__)

ADMIN_TIMEOUT_S = 30.0
KAFKA_RETRY_AFTER_S = 2.0

# Errors that mean "the cluster is not reachable or not ready right now".
_TRANSIENT: tuple[type[BaseException], ...] = (
    KafkaConnectionError,
    KafkaTimeoutError,
    NodeNotReadyError,
    RequestTimedOutError,
    UnknownTopicOrPartitionError,
    asyncio.TimeoutError,
    OSError,
)


@contextlib.contextmanager
def kafka_errors(action: str) -> Iterator[None]:
    """Translate aiokafka and socket errors raised inside the block onto ghgwatch's tree.

    Args:
        action: what was being done, for the message (e.g. ``"produce"``).

    Raises:
        BrokerUnavailable: the cluster cannot be reached or timed out (retry later).
        FatalError: any other Kafka error (misconfiguration, authorisation).
    """
    try:
        yield
    except _TRANSIENT as exc:
        raise BrokerUnavailable(
            f"kafka {action}: {type(exc).__name__}: {exc}", retry_after=KAFKA_RETRY_AFTER_S
        ) from exc
    except KafkaError as exc:
        if getattr(exc, "retriable", False):
            raise BrokerUnavailable(
                f"kafka {action}: {type(exc).__name__}: {exc}", retry_after=KAFKA_RETRY_AFTER_S
            ) from exc
        raise FatalError(f"kafka {action}: {type(exc).__name__}: {exc}") from exc


def client_options(cfg: KafkaSettings, bootstrap: str) -> dict[str, Any]:
    """Connection options shared by producers, consumers and admin clients."""
    opts: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "request_timeout_ms": int(cfg.request_timeout_s * 1000),
        "security_protocol": cfg.security_protocol,
    }
    if cfg.sasl_mechanism:
        if cfg.sasl_username is None or cfg.sasl_password is None:
            raise ConfigurationError("kafka.sasl_mechanism needs sasl_username and sasl_password")
        opts.update(
            sasl_mechanism=cfg.sasl_mechanism,
            sasl_plain_username=cfg.sasl_username,
            sasl_plain_password=cfg.sasl_password.get_secret_value(),
        )
    return opts


def make_producer(cfg: KafkaSettings, bootstrap: str) -> AIOKafkaProducer:
    """A producer that only reports success once every in-sync replica has the record."""
    return AIOKafkaProducer(
        **client_options(cfg, bootstrap),
        acks="all",
        linger_ms=cfg.linger_ms,
        max_batch_size=cfg.max_batch_bytes,
        max_request_size=max(cfg.max_batch_bytes, 1_048_576),
        enable_idempotence=cfg.enable_idempotence,
    )


async def ensure_topics(cfg: KafkaSettings, bootstrap: str, topics: Iterable[str]) -> None:
    """Create the given topics with the configured partitions if they do not exist yet.

    Raises:
        BrokerUnavailable: the cluster could not be reached within ``ADMIN_TIMEOUT_S``.
    """
    wanted = sorted(set(topics))
    admin = AIOKafkaAdminClient(**client_options(cfg, bootstrap))
    with kafka_errors("create topics"):
        async with asyncio.timeout(ADMIN_TIMEOUT_S):
            await admin.start()
            try:
                existing = set(await admin.list_topics())
                missing = [t for t in wanted if t not in existing]
                if missing:
                    new = [
                        NewTopic(t, cfg.partitions, cfg.replication_factor) for t in missing
                    ]
                    with contextlib.suppress(TopicAlreadyExistsError):
                        await admin.create_topics(new)
                    log.info("kafka topics created", topics=missing, partitions=cfg.partitions)
            finally:
                await admin.close()
