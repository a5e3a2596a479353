"""The on-call HTTP API (FastAPI): list, show, acknowledge, resolve and silence alerts.

Every route except ``/healthz``, the docs and the web console needs ``Authorization: Bearer
<token>`` with a token from ``alerts.api_tokens``; the token's name is recorded as the actor
unless the body names a person. The console (``/console``) checks its own session cookie or
signed link (:mod:`alerts.web.routes`). OpenAPI docs are served at ``/docs`` (Swagger UI from
the package's own assets, no CDN) and ``/openapi.json``.

Hostile requests are answered before they cost anything (:class:`RequestGuard`, in order):

1. a declared ``Content-Length`` over :data:`MAX_BODY_BYTES`: 413, the body never read;
2. no valid token on a protected path: 401, the body never read;
3. a streamed body growing past :data:`MAX_BODY_BYTES`: 413 as soon as it does.

Ids are PostgreSQL ``bigint`` (1..2^63-1) and text is bounded and free of NUL, so bad input
is a 422, never a 500; every status an operation can answer is in the OpenAPI document.
At start the API waits for its database (:func:`adapters.wait_for_database`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import structlog
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters import port_is_free, wait_for_database
from alerts.exceptions import AlertNotFound, InvalidTransition
from alerts.models import (
    NAME_MAX_CHARS,
    NO_NUL_PATTERN,
    AckRequest,
    AlertDetail,
    AlertFilter,
    AlertView,
    ResolveRequest,
    SilenceAlertRequest,
    SilenceRequest,
    SilenceView,
)
from alerts.reads import BIGINT_MAX  # alert and silence ids are PostgreSQL bigint
from alerts.store import AlertStore
from alerts.web.routes import CONSOLE_PREFIX, install_console
from core.errors import ConfigurationError, TransientError
from core.settings import AlertsSettings, Settings

__all__ = [
    "BIGINT_MAX",
    "DB_START_TIMEOUT_S",
    "MAX_BODY_BYTES",
    "AlertApi",
    "ErrorDetail",
    "RequestGuard",
    "create_app",
]

log = structlog.get_logger(__name__)

STARTUP_TIMEOUT_S = 30.0
SHUTDOWN_TIMEOUT_S = 10.0
STARTUP_POLL_S = 0.02  # uvicorn exposes `started` as a flag, not an event
API_VERSION = "1"
MAX_BODY_BYTES = 64 * 1024  # the largest valid request is a few KiB of JSON
DB_START_TIMEOUT_S = 600.0  # how long a starting API waits for its database
PUBLIC_PATHS = frozenset({"/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect"})

_NO_BEARER_DETAIL = "missing bearer token (Authorization: Bearer <token>)"
_WRONG_BEARER_DETAIL = "invalid bearer token"
_TOO_LARGE = f"request body larger than {MAX_BODY_BYTES} bytes"


class ErrorDetail(BaseModel):
    """The body of every error but 422: what went wrong, for a person to read."""

    detail: str


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI response entries for the error statuses an operation can answer."""
    text = {
        400: "The body could not be read as JSON text (e.g. not UTF-8)",
        401: "Missing or unknown bearer token",
        404: "No such alert or silence",
        409: "The alert is not in a state that allows this",
        413: f"Request body over {MAX_BODY_BYTES} bytes",
        503: "The database is unavailable; retry after Retry-After seconds",
    }
    return {code: {"model": ErrorDetail, "description": text[code]} for code in codes}


_READ = _responses(401, 413, 503)
_ONE = _responses(401, 404, 413, 503)
_CHANGE = _responses(400, 401, 404, 409, 413, 503)
_CREATE = _responses(400, 401, 413, 503)

AlertId = Annotated[int, Path(ge=1, le=BIGINT_MAX, description="An alert id (bigint)")]
SilenceId = Annotated[int, Path(ge=1, le=BIGINT_MAX, description="A silence id (bigint)")]
FilterText = Annotated[str | None, Query(max_length=NAME_MAX_CHARS, pattern=NO_NUL_PATTERN)]


def _now() -> datetime:
    return datetime.now(UTC)


_bearer = HTTPBearer(auto_error=False, description="A token from alerts.api_tokens")


def _token_name(cfg: AlertsSettings, token: str) -> str | None:
    """The name of the configured token equal to ``token`` (constant-time compare), or None."""
    given = token.encode("utf-8", "surrogateescape")
    found: str | None = None
    for name, secret in cfg.api_tokens.items():
        if hmac.compare_digest(secret.get_secret_value().encode(), given):
            found = name
    return found


def _bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _who(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The name of the token presented; 401 when missing or unknown."""
    cfg: AlertsSettings = request.app.state.alerts_cfg
    if creds is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, _NO_BEARER_DETAIL, headers={"WWW-Authenticate": "Bearer"}
        )
    name = _token_name(cfg, creds.credentials)
    if name is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            _WRONG_BEARER_DETAIL,
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return name


class _BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes the limit (FastAPI re-raises
    HTTPExceptions met while reading the body, so it becomes the 413 response)."""

    def __init__(self) -> None:
        super().__init__(status.HTTP_413_CONTENT_TOO_LARGE, _TOO_LARGE)


class RequestGuard:
    """ASGI middleware: body size limit and authentication before any body is read.

    Args:
        app: the application behind it.
        cfg: the ``alerts`` settings (the tokens).
        max_body_bytes: the largest body accepted.
    """

    def __init__(self, app: ASGIApp, *, cfg: AlertsSettings, max_body_bytes: int) -> None:
        self._app = app
        self._cfg = cfg
        self._max = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse oversized or unauthenticated requests; count the bytes of the others."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self._max):
            await JSONResponse({"detail": _TOO_LARGE}, 413)(scope, receive, send)
            return
        path: str = scope["path"]
        # The console checks its own session or signed link on every route (alerts.web).
        console = path == CONSOLE_PREFIX or path.startswith(f"{CONSOLE_PREFIX}/")
        if path not in PUBLIC_PATHS and not console:
            token = _bearer_token(headers.get("authorization"))
            if token is None or _token_name(self._cfg, token) is None:
                detail, challenge = (
                    (_NO_BEARER_DETAIL, "Bearer")
                    if token is None
                    else (_WRONG_BEARER_DETAIL, 'Bearer error="invalid_token"')
                )
                await JSONResponse(
                    {"detail": detail}, 401, headers={"WWW-Authenticate": challenge}
                )(scope, receive, send)
                return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self._max:
                    raise _BodyTooLarge
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._app(scope, counted, watched)
        except _BodyTooLarge:
            if started:
                raise
            await JSONResponse({"detail": _TOO_LARGE}, 413)(scope, receive, send)


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
        await wait_for_database(settings.db_url(), DB_START_TIMEOUT_S)
        async with AlertStore(settings.db_url(), cfg, settings.db, settings.console) as own:
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
        docs_url=None,  # served from the package's own Swagger UI assets (install_console)
        redoc_url=None,
    )
    app.state.alerts_cfg = cfg
    app.state.store_holder = holder
    app.add_middleware(RequestGuard, cfg=cfg, max_body_bytes=MAX_BODY_BYTES)
    install_console(app, settings)
    if not cfg.api_tokens:
        log.warning("alerts.api_tokens is empty: the on-call API refuses every request")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError) -> Response:
        # FastAPI's own handler echoes the input as UTF-8 and fails (500) on a lone
        # surrogate; ASCII JSON escapes it, so the 422 can always be written.
        body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True)
        return Response(body, status.HTTP_422_UNPROCESSABLE_CONTENT, media_type="application/json")

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

    @app.get("/healthz", tags=["health"], responses=_responses(413))
    async def healthz() -> dict[str, str]:
        """Liveness: the API process is up (no authentication)."""
        return {"status": "ok"}

    @app.get("/alerts", tags=["alerts"], responses=_READ)
    async def list_alerts(
        _actor: ActorDep,
        store: StoreDep,
        state: Literal["open", "acknowledged", "resolved"] | None = None,
        active: Annotated[bool | None, Query(description="true: open or acknowledged")] = None,
        severity: Literal["info", "maintenance", "warning", "critical"] | None = None,
        network: FilterText = None,
        site: FilterText = None,
        kind: FilterText = None,
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

    @app.get("/alerts/{alert_id}", tags=["alerts"], responses=_ONE)
    async def show_alert(alert_id: AlertId, _actor: ActorDep, store: StoreDep) -> AlertDetail:
        """One alert with its detections, history and every notification attempt."""
        return await store.reads.get_alert(alert_id)

    @app.post("/alerts/{alert_id}/ack", tags=["alerts"], responses=_CHANGE)
    async def ack_alert(
        alert_id: AlertId, actor: ActorDep, store: StoreDep, body: AckRequest | None = None
    ) -> AlertView:
        """Acknowledge: escalation stops. 409 when already acknowledged or resolved."""
        body = body or AckRequest()
        return await store.writes.acknowledge(alert_id, body.by or actor, body.note, _now())

    @app.post("/alerts/{alert_id}/resolve", tags=["alerts"], responses=_CHANGE)
    async def resolve_alert(
        alert_id: AlertId, actor: ActorDep, store: StoreDep, body: ResolveRequest | None = None
    ) -> AlertView:
        """Resolve by hand; resolution notifications are sent. 409 when already resolved."""
        body = body or ResolveRequest()
        return await store.writes.resolve(alert_id, body.by or actor, body.note, _now())

    @app.post("/alerts/{alert_id}/silence", tags=["alerts"], status_code=201, responses=_CHANGE)
    async def silence_alert(
        alert_id: AlertId, actor: ActorDep, store: StoreDep, body: SilenceAlertRequest | None = None
    ) -> SilenceView:
        """Silence the alert's site and group: recorded, not notified. 409 when resolved."""
        body = body or SilenceAlertRequest()
        return await store.writes.silence_alert(
            alert_id, body.by or actor, body.duration_s, body.reason, _now()
        )

    @app.get("/silences", tags=["silences"], responses=_READ)
    async def list_silences(
        _actor: ActorDep, store: StoreDep, include_ended: bool = False
    ) -> list[SilenceView]:
        """Silences and maintenance windows not ended yet (or all, newest first)."""
        return await store.reads.list_silences(_now(), active_only=not include_ended)

    @app.post("/silences", tags=["silences"], status_code=201, responses=_CREATE)
    async def create_silence(body: SilenceRequest, actor: ActorDep, store: StoreDep) -> SilenceView:
        """Create a silence or maintenance window (e.g. a sensor calibration)."""
        starts_at = body.starts_at or _now()
        if body.ends_at <= starts_at:
            # The model checks this when starts_at is given; "now" is only known here.
            raise RequestValidationError(
                [
                    {
                        "type": "value_error",
                        "loc": ("body", "ends_at"),
                        "msg": "ends_at must be after starts_at (default: now)",
                        "input": body.ends_at.isoformat(),
                    }
                ]
            )
        return await store.writes.create_silence(
            kind=body.kind,
            network=body.network,
            site=body.site,
            device_id=body.device_id,
            group=body.group,
            starts_at=starts_at,
            ends_at=body.ends_at,
            reason=body.reason,
            actor=body.by or actor,
        )

    @app.delete("/silences/{silence_id}", tags=["silences"], responses=_ONE)
    async def end_silence(silence_id: SilenceId, _actor: ActorDep, store: StoreDep) -> SilenceView:
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
        db_wait_s: how long to wait at start for the database to accept connections.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        port: int | None = None,
        db_wait_s: float = DB_START_TIMEOUT_S,
    ) -> None:
        self._settings = settings
        self._db_wait_s = db_wait_s
        self.host = settings.alerts.api_host
        self.port = settings.alerts.api_port if port is None else port
        self.started = asyncio.Event()

    @property
    def url(self) -> str:
        """Base URL of the running API."""
        return f"http://{self.host}:{self.port}"

    @property
    def console_url(self) -> str:
        """The web console of the running API (log in there with an API token)."""
        return f"{self.url}{CONSOLE_PREFIX}"

    async def run(
        self, *, stop: asyncio.Event | None = None, timeout_s: float | None = None
    ) -> None:
        """Serve until ``stop`` is set or ``timeout_s`` passes.

        Raises:
            ConfigurationError: the port is taken.
            FatalError: the store could not be opened (credentials, database).
            StorageBackpressure: the database did not come up within ``db_wait_s``.
        """
        stop = stop or asyncio.Event()
        s = self._settings
        if self.port and not port_is_free(self.port, self.host):
            raise ConfigurationError(
                f"on-call API port {self.host}:{self.port} is in use (alerts.api_port)"
            )
        await wait_for_database(s.db_url(), self._db_wait_s)
        async with AlertStore(s.db_url(), s.alerts, s.db, s.console) as store:
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
                log.info(
                    "on-call API listening",
                    url=self.url,
                    console=self.console_url,
                    docs=f"{self.url}/docs",
                )
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
