"""Prometheus for every service: one registry per service, its HTTP endpoint, shared series.

Each service keeps its series in a :class:`ServiceMetrics` of its own (a registry per
service, so several services and tests share a process without colliding), serves it with
:meth:`ServiceMetrics.serve` and, when it consumes Kafka, reports its :class:`LagGauge`
through the consumer loop. The bridge alone keeps plain counters turned into families at
scrape time (its hot path runs per MQTT message), but it too owns its registry.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, ClassVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from core.errors import ConfigurationError
from core.settings import MetricsSettings

__all__ = ["BATCH_SECONDS_BUCKETS_S", "LagGauge", "MetricsServer", "ServiceMetrics"]

# One polled batch of a consumer: from a handful of records on a quiet topic to a full
# batch_max after a backlog, including the database transaction and any produce round trip.
BATCH_SECONDS_BUCKETS_S: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0
)  # fmt: skip
_SERVER_JOIN_TIMEOUT_S = 1.0


class MetricsServer:
    """The HTTP endpoint serving one registry; :meth:`close` stops it."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        result: Any = start_http_server(port, addr=host, registry=registry)
        self._server, self._thread = result
        self.port: int = int(self._server.server_port)

    def close(self) -> None:
        """Stop serving and release the port."""
        with contextlib.suppress(OSError):
            self._server.shutdown()
            self._server.server_close()
        self._thread.join(timeout=_SERVER_JOIN_TIMEOUT_S)


class LagGauge:
    """Records a consumer group has not consumed yet, per partition (``<prefix>_consumer_lag``).

    Args:
        prefix: the service's metric prefix (``ghgwatch_processor``).
        registry: the service's registry.
        what: what the records are, for the help text (``"Records"``).
    """

    def __init__(self, prefix: str, registry: CollectorRegistry, what: str) -> None:
        self._gauge = Gauge(
            f"{prefix}_consumer_lag",
            f"{what} not yet consumed per partition (high watermark - position).",
            ["topic", "partition"],
            registry=registry,
        )

    def set(self, topic: str, partition: int, lag: int) -> None:
        """Set a partition's lag (records behind its high watermark)."""
        self._gauge.labels(topic, str(partition)).set(lag)

    def forget(self, topic: str, partition: int) -> None:
        """Drop a revoked partition's series (another member reports it now)."""
        with contextlib.suppress(KeyError):
            self._gauge.remove(topic, str(partition))


class ServiceMetrics:
    """A service's series in a registry of its own, and the endpoint that serves them.

    Subclasses set :attr:`PREFIX`, :attr:`SERVICE` and :attr:`PORT_FIELD` (the
    ``metrics`` settings field holding the service's port) and declare their series with
    :meth:`counter`, :meth:`gauge` and :meth:`histogram`.

    Attributes:
        registry: the registry holding only this service's series.
        consumer_lag: the service's lag gauge when it consumes Kafka, else None.
    """

    PREFIX: ClassVar[str]
    SERVICE: ClassVar[str]
    PORT_FIELD: ClassVar[str]

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.consumer_lag: LagGauge | None = None

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        """A counter ``<PREFIX>_<name>_total`` in this registry."""
        return Counter(f"{self.PREFIX}_{name}", documentation, labels, registry=self.registry)

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
        """A gauge ``<PREFIX>_<name>`` in this registry."""
        return Gauge(f"{self.PREFIX}_{name}", documentation, labels, registry=self.registry)

    def histogram(self, name: str, documentation: str, buckets: Sequence[float]) -> Histogram:
        """A histogram ``<PREFIX>_<name>`` with these bucket bounds in this registry."""
        return Histogram(
            f"{self.PREFIX}_{name}", documentation, buckets=buckets, registry=self.registry
        )

    def lag_gauge(self, what: str) -> LagGauge:
        """Declare this service's :class:`LagGauge` (``what``: the records, for the help)."""
        self.consumer_lag = LagGauge(self.PREFIX, self.registry, what)
        return self.consumer_lag

    def serve(self, cfg: MetricsSettings) -> MetricsServer | None:
        """Serve ``/metrics`` for this registry on ``cfg.host`` and the service's port.

        Args:
            cfg: the ``metrics`` section (port 0 = any free port; read it from the result).

        Returns:
            The running server (:meth:`MetricsServer.close` stops it), None when
            ``cfg.enabled`` is false.

        Raises:
            ConfigurationError: the address cannot be bound (port in use).
        """
        if not cfg.enabled:
            return None
        port = int(getattr(cfg, self.PORT_FIELD))
        try:
            return MetricsServer(self.registry, cfg.host, port)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot serve {self.SERVICE} metrics on {cfg.host}:{port}: {exc}"
            ) from exc
