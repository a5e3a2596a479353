"""The Prometheus HTTP endpoint each service serves its own registry on."""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

__all__ = ["MetricsServer"]


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
        self._thread.join(timeout=1.0)
