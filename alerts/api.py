"""The on-call HTTP API (FastAPI): list, show, acknowledge, resolve and silence alerts.

Every route except ``/healthz`` needs ``Authorization: Bearer <token>`` with a token from
``alerts.api_tokens``; the token's name is recorded as the actor unless the body names a
person. OpenAPI docs are served at ``/docs`` and ``/openapi.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Annotated, Literal

import structlog
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from adapters.ports import port_is_free
from alerts.exceptions import AlertNotFound, InvalidTransition
from alerts.models import (
    AckRequest,
    AlertDetail,
    AlertFilter,
    AlertView,
    ResolveRequest,
    SilenceAlertRequest,
    SilenceRequest,
    SilenceView,
)
from alerts.store import AlertStore
from core.errors import ConfigurationError, TransientError
from core.settings import AlertsSettings, Settings

__all__ = ["AlertApi", "create_app"]

log = structlog.get_logger(__name__)

STARTUP_TIMEOUT_S = 30.0
SHUTDOWN_TIMEOUT_S = 10.0
STARTUP_POLL_S = 0.02  # uvicorn exposes `started` as a flag, not an event
API_VERSION = "1"


def _now() -> datetime:
    return datetime.now(UTC)


_bearer = HTTPBearer(auto_error=False, description="A token from alerts.api_tokens")


def _who(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The name of the token presented; 401 when missing or unknown."""
    cfg: AlertsSettings = request.app.state.alerts_cfg
    if creds is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token (Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    given = creds.credentials.encode()
    for name, token in cfg.api_tokens.items():
        if hmac.compare_digest(token.get_secret_value().encode(), given):
            return name
    raise HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        "invalid bearer token",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def _store(request: Request) -> AlertStore:
    store: AlertStore = request.app.state.store_holder["store"]
    return store


ActorDep = Annotated[str, Depends(_who)]
StoreDep = Annotated[AlertStore, Depends(_store)]


def create_app(settings: Settings, store: AlertStore | None = None) -> FastAPI:
    """Build the API application.

    Args:
        settings: the whole settings (db URL, ``alerts`` tokens and defaults).
        store: an already open store to use; None opens one for the app's lifetime.

    Returns:
        The FastAPI app.
    """
    cfg: AlertsSettings = settings.alerts
    holder: dict[str, AlertStore] = {}
    if store is not None:
        holder["store"] = store

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if "store" in holder:
            yield
            return
        async with AlertStore(settings.db_url(), cfg, settings.db) as own:
            holder["store"] = own
            try:
                yield
            finally:
                holder.pop("store", None)

    app = FastAPI(
        title="ghgwatch on-call API",
        version=API_VERSION,
        description="Leak and exceedance alerts: list, show with history, acknowledge, "
        "resolve, silence. Authenticate with `Authorization: Bearer <token>`.",
        lifespan=lifespan,
    )
    app.state.alerts_cfg = cfg
    app.state.store_holder = holder
    if not cfg.api_tokens:
        log.warning("alerts.api_tokens is empty: the on-call API refuses every request")

    @app.exception_handler(AlertNotFound)
    async def _not_found(_req: Request, exc: AlertNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_404_NOT_FOUND)

    @app.exception_handler(InvalidTransition)
    async def _conflict(_req: Request, exc: InvalidTransition) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_409_CONFLICT)

    @app.exception_handler(TransientError)
    async def _unavailable(_req: Request, exc: TransientError) -> JSONResponse:
        return JSONResponse(
            {"detail": f"temporarily unavailable: {exc}"},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(max(int(exc.retry_after), 1))},
        )

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the API process is up (no authentication)."""
        return {"status": "ok"}

    @app.get("/alerts", tags=["alerts"])
    async def list_alerts(
        _actor: ActorDep,
        store: StoreDep,
        state: Literal["open", "acknowledged", "resolved"] | None = None,
        active: Annotated[bool | None, Query(description="true: open or acknowledged")] = None,
        severity: Literal["info", "maintenance", "warning", "critical"] | None = None,
        network: str | None = None,
        site: str | None = None,
        kind: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[AlertView]:
        """Alerts, newest first, filtered by state, severity, network, site, kind."""
        flt = AlertFilter(
            state=state,
            active=active,
            severity=severity,
            network=network,
            site=site,
            kind=kind,
            limit=limit,
        )
        return await store.reads.list_alerts(flt)

    @app.get("/alerts/{alert_id}", tags=["alerts"])
    async def show_alert(alert_id: int, _actor: ActorDep, store: StoreDep) -> AlertDetail:
        """One alert with its detections, history and every notification attempt."""
        return await store.reads.get_alert(alert_id)

    @app.post("/alerts/{alert_id}/ack", tags=["alerts"])
    async def ack_alert(
        alert_id: int, actor: ActorDep, store: StoreDep, body: AckRequest | None = None
    ) -> AlertView:
        """Acknowledge: escalation stops. 409 when already acknowledged or resolved."""
        body = body or AckRequest()
        return await store.writes.acknowledge(alert_id, body.by or actor, body.note, _now())

    @app.post("/alerts/{alert_id}/resolve", tags=["alerts"])
    async def resolve_alert(
        alert_id: int, actor: ActorDep, store: StoreDep, body: ResolveRequest | None = None
    ) -> AlertView:
        """Resolve by hand; resolution notifications are sent. 409 when already resolved."""
        body = body or ResolveRequest()
        return await store.writes.resolve(alert_id, body.by or actor, body.note, _now())

    @app.post("/alerts/{alert_id}/silence", tags=["alerts"], status_code=201)
    async def silence_alert(
        alert_id: int, actor: ActorDep, store: StoreDep, body: SilenceAlertRequest | None = None
    ) -> SilenceView:
        """Silence the alert's site and group: recorded, not notified. 409 when resolved."""
        body = body or SilenceAlertRequest()
        return await store.writes.silence_alert(
            alert_id, body.by or actor, body.duration_s, body.reason, _now()
        )

    @app.get("/silences", tags=["silences"])
    async def list_silences(
        _actor: ActorDep, store: StoreDep, include_ended: bool = False
    ) -> list[SilenceView]:
        """Silences and maintenance windows not ended yet (or all, newest first)."""
        return await store.reads.list_silences(_now(), active_only=not include_ended)

    @app.post("/silences", tags=["silences"], status_code=201)
    async def create_silence(body: SilenceRequest, actor: ActorDep, store: StoreDep) -> SilenceView:
        """Create a silence or maintenance window (e.g. a sensor calibration)."""
        return await store.writes.create_silence(
            kind=body.kind,
            network=body.network,
            site=body.site,
            device_id=body.device_id,
            group=body.group,
            starts_at=body.starts_at or _now(),
            ends_at=body.ends_at,
            reason=body.reason,
            actor=body.by or actor,
        )

    @app.delete("/silences/{silence_id}", tags=["silences"])
    async def end_silence(silence_id: int, _actor: ActorDep, store: StoreDep) -> SilenceView:
        """End a silence now; it stays in the record."""
        return await store.writes.end_silence(silence_id, _now())

    return app


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the caller's stop event rules."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class AlertApi:
    """Runs the on-call API with uvicorn on ``alerts.api_host:api_port``.

    Args:
        settings: the whole settings.
        port: override ``alerts.api_port`` (tests pass a free port).
    """

    def __init__(self, settings: Settings, *, port: int | None = None) -> None:
        self._settings = settings
        self.host = settings.alerts.api_host
        self.port = settings.alerts.api_port if port is None else port
        self.started = asyncio.Event()

    @property
    def url(self) -> str:
        """Base URL of the running API."""
        return f"http://{self.host}:{self.port}"

    async def run(
        self, *, stop: asyncio.Event | None = None, timeout_s: float | None = None
    ) -> None:
        """Serve until ``stop`` is set or ``timeout_s`` passes.

        Raises:
            ConfigurationError: the port is taken.
            FatalError: the store could not be opened (credentials, database).
        """
        stop = stop or asyncio.Event()
        s = self._settings
        if self.port and not port_is_free(self.port, self.host):
            raise ConfigurationError(
                f"on-call API port {self.host}:{self.port} is in use (alerts.api_port)"
            )
        async with AlertStore(s.db_url(), s.alerts, s.db) as store:
            config = uvicorn.Config(
                create_app(s, store),
                host=self.host,
                port=self.port,
                log_level="warning",
                access_log=False,
                lifespan="on",
            )
            server = _Server(config)
            task = asyncio.create_task(server.serve(), name="alerts-api")
            try:
                async with asyncio.timeout(STARTUP_TIMEOUT_S):
                    while not server.started:
                        if task.done():
                            task.result()
                            return
                        await asyncio.sleep(STARTUP_POLL_S)
                self.started.set()
                log.info("on-call API listening", url=self.url, docs=f"{self.url}/docs")
                waiter = asyncio.ensure_future(stop.wait())
                try:
                    await asyncio.wait(
                        {waiter, task}, timeout=timeout_s, return_when="FIRST_COMPLETED"
                    )
                finally:
                    waiter.cancel()
            finally:
                server.should_exit = True
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(SHUTDOWN_TIMEOUT_S):
                        await task
                if task.done() and not task.cancelled():
                    task.result()
