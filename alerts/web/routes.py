"""The on-call console, served by the on-call API under ``/console``, and the offline ``/docs``.

Pages are rendered on the server (Jinja2); htmx refreshes the overview every few seconds and
uPlot draws the readings around an alert. Every asset comes from ``alerts/web/static``.

Who may do what:

- ``/console/login``: an API token (``alerts.api_tokens``) once, then a signed session cookie
  (HttpOnly, SameSite=Lax, ``Secure`` when ``console.cookie_secure``) lasting
  ``console.session_ttl_s``; the token's name is the actor recorded in the history. A
  session ends early when its token is removed from the settings or the key changes.
- Console pages need a session (else a redirect to the log-in page); console actions
  (acknowledge, resolve, silence) need a session and the session's anti-forgery token in the
  form (``csrf``) or the ``X-CSRF-Token`` header: without a session 401, without the right
  anti-forgery token 403.
- ``/console/ack/<token>``: a signed acknowledgement link from a notification. GET shows the
  alert with one Acknowledge button and changes nothing (chat apps fetch links to preview
  them); the button POSTs to the same address, which acknowledges once and records the
  link's recipient and the time in the alert's history. Expired, tampered, foreign or used
  links get a page saying which.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, FastAPI, Request, status
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from alerts.exceptions import AlertNotFound, InvalidTransition
from alerts.links import LinkRefused, csrf_token, sign, verify
from alerts.models import AlertFilter, AlertView
from alerts.reads import BIGINT_MAX
from alerts.store import AlertStore
from alerts.web.reads import DetectionRow
from core.settings import Settings

__all__ = [
    "CONSOLE_PREFIX",
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "STATIC_PREFIX",
    "install_console",
]

WEB_DIR = Path(__file__).resolve().parent
CONSOLE_PREFIX = "/console"
STATIC_PREFIX = f"{CONSOLE_PREFIX}/static"
SESSION_COOKIE = "ghgwatch_session"
CSRF_HEADER = "x-csrf-token"
HTMX_JS = "vendor/htmx-2.0.11.min.js"
UPLOT_JS = "vendor/uPlot-1.6.32.iife.min.js"
UPLOT_CSS = "vendor/uPlot-1.6.32.min.css"
SWAGGER_DIR = "vendor/swagger-ui-5.35.0"
FRESH_S = 300.0  # a source that sent nothing for 5 minutes is not flowing (detector gap_s)
TIMELINE = timedelta(hours=24)
REFRESH_S = 5
SILENCE_CHOICES_S = (3600, 4 * 3600, 24 * 3600)
# A report's fields shown first when its row has them (the reports branch defines the table).
REPORT_KEYS = ("quarter", "title", "status", "created_at")
# Console pages load only their own scripts and styles; no page may frame them.
_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
_LINK_STATUS = {
    "malformed": status.HTTP_400_BAD_REQUEST,
    "tampered": status.HTTP_403_FORBIDDEN,
    "wrong_purpose": status.HTTP_403_FORBIDDEN,
    "expired": status.HTTP_410_GONE,
    "reused": status.HTTP_409_CONFLICT,
}
_LINK_TITLE = {
    "malformed": "This is not a valid acknowledgement link",
    "tampered": "This link was changed and cannot be used",
    "wrong_purpose": "This link is not an acknowledgement link",
    "expired": "This acknowledgement link has expired",
    "reused": "This acknowledgement link was used already",
}

templates = Jinja2Templates(directory=WEB_DIR / "templates")


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in console user: the token name and the session's anti-forgery token."""

    user: str
    csrf: str


def _now() -> datetime:
    return datetime.now(UTC)


def _store(request: Request) -> AlertStore:
    store: AlertStore = request.app.state.store_holder["store"]
    return store


StoreDep = Annotated[AlertStore, Depends(_store)]


async def _session(request: Request, store: StoreDep) -> Session | None:
    """The valid session of the request's cookie, or None."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    key = await store.link_key()
    try:
        claims = verify(key, token, "session", _now())
    except LinkRefused:
        return None
    settings: Settings = request.app.state.settings
    if claims.subject not in settings.alerts.api_tokens:
        return None  # the token was removed: its sessions end
    return Session(user=claims.subject, csrf=csrf_token(key, claims.nonce))


SessionDep = Annotated[Session | None, Depends(_session)]


async def _form(request: Request) -> dict[str, str]:
    """A url-encoded form body (the first value of each field); other bodies are empty."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    body = (await request.body()).decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(body, max_num_fields=20).items()}


def _fmt(at: datetime | None, tz: str) -> str:
    if at is None:
        return "-"
    return at.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S %Z")


def _ago(at: datetime | None, now: datetime) -> str:
    if at is None:
        return "never"
    s = int((now - at).total_seconds())
    if s < 90:
        return f"{max(s, 0)} s ago"
    if s < 5400:
        return f"{s // 60} min ago"
    if s < 2 * 86400:
        return f"{s // 3600} h ago"
    return f"{s // 86400} d ago"


def _timeline(rows: list[DetectionRow], since: datetime, now: datetime) -> list[dict[str, Any]]:
    """Each detection's bar on the time line, as percentages of the window."""
    span = max((now - since).total_seconds(), 1.0)
    out = []
    for d in rows:
        start = max((d.started_at - since).total_seconds(), 0.0)
        end = min(((d.ended_at or now) - since).total_seconds(), span)
        out.append(
            {
                "d": d,
                "left": round(100 * start / span, 2),
                "width": round(max(100 * (end - start) / span, 0.4), 2),
            }
        )
    return out


def _page(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    settings: Settings = request.app.state.settings
    tz = settings.alerts.timezone
    base = {
        "static": STATIC_PREFIX,
        "htmx_js": HTMX_JS,
        "uplot_js": UPLOT_JS,
        "uplot_css": UPLOT_CSS,
        "fmt": lambda at: _fmt(at, tz),
        "refresh_s": REFRESH_S,
    }
    response = templates.TemplateResponse(request, name, base | context, status_code=status_code)
    response.headers["Content-Security-Policy"] = _CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"  # links carry tokens in their path
    response.headers["Cache-Control"] = "no-store"
    return response


def _to_login(request: Request) -> RedirectResponse:
    target = request.url.path
    return RedirectResponse(
        f"{CONSOLE_PREFIX}/login?next={quote(target)}", status.HTTP_303_SEE_OTHER
    )


def _alert_id(raw: int) -> int:
    if not 1 <= raw <= BIGINT_MAX:
        raise AlertNotFound(f"no alert {raw}")
    return raw


def _refused_action(request: Request, session: Session | None) -> Response:
    """401 without a session, 403 with one but without its anti-forgery token."""
    if session is None:
        return _page(
            request,
            "refused.html",
            {"title": "Log in first", "message": "This action needs a console session."},
            status.HTTP_401_UNAUTHORIZED,
        )
    return _page(
        request,
        "refused.html",
        {"title": "Refused", "message": "The form's anti-forgery token is missing or wrong."},
        status.HTTP_403_FORBIDDEN,
    )


def _csrf_ok(request: Request, session: Session, form: dict[str, str]) -> bool:
    given = form.get("csrf") or request.headers.get(CSRF_HEADER) or ""
    return hmac.compare_digest(given.encode(), session.csrf.encode())


def console_router() -> APIRouter:
    """The console's routes (not in the OpenAPI document: they speak HTML, not the API)."""
    router = APIRouter(prefix=CONSOLE_PREFIX, include_in_schema=False)

    @router.get("")
    async def home(request: Request, session: SessionDep, store: StoreDep) -> Response:
        if session is None:
            return _to_login(request)
        return _page(request, "overview.html", await _overview(request, store, session))

    @router.get("/parts/overview")
    async def overview_part(request: Request, session: SessionDep, store: StoreDep) -> Response:
        if session is None:
            return Response(status_code=status.HTTP_401_UNAUTHORIZED)
        return _page(request, "_overview.html", await _overview(request, store, session))

    @router.get("/login")
    async def login_page(request: Request, next: str = CONSOLE_PREFIX) -> Response:
        return _page(request, "login.html", {"next": _safe_next(next), "error": None})

    @router.post("/login")
    async def login(request: Request, store: StoreDep) -> Response:
        form = await _form(request)
        settings: Settings = request.app.state.settings
        name = _token_owner(settings, form.get("token", ""))
        target = _safe_next(form.get("next", CONSOLE_PREFIX))
        if name is None:
            return _page(
                request,
                "login.html",
                {"next": target, "error": "Unknown token."},
                status.HTTP_401_UNAUTHORIZED,
            )
        key = await store.link_key()
        ttl = settings.console.session_ttl_s
        response = RedirectResponse(target, status.HTTP_303_SEE_OTHER)
        response.set_cookie(
            SESSION_COOKIE,
            sign(key, "session", name, name, _now(), ttl),
            max_age=int(ttl),
            path=CONSOLE_PREFIX,
            httponly=True,
            samesite="lax",
            secure=settings.console.cookie_secure,
        )
        return response

    @router.post("/logout")
    async def logout(request: Request, session: SessionDep) -> Response:
        form = await _form(request)
        if session is None or not _csrf_ok(request, session, form):
            return _refused_action(request, session)
        response = RedirectResponse(f"{CONSOLE_PREFIX}/login", status.HTTP_303_SEE_OTHER)
        response.delete_cookie(SESSION_COOKIE, path=CONSOLE_PREFIX)
        return response

    @router.get("/alerts/{alert_id}")
    async def alert_page(
        request: Request, alert_id: int, session: SessionDep, store: StoreDep
    ) -> Response:
        if session is None:
            return _to_login(request)
        detail = await store.reads.get_alert(_alert_id(alert_id))
        return _page(
            request,
            "alert.html",
            {
                "session": session,
                "d": detail,
                "a": detail.alert,
                "silence_choices": SILENCE_CHOICES_S,
            },
        )

    @router.get("/alerts/{alert_id}/readings")
    async def alert_readings(
        request: Request, alert_id: int, session: SessionDep, store: StoreDep
    ) -> Response:
        settings: Settings = request.app.state.settings
        if session is None:
            return JSONResponse({"detail": "log in first"}, status.HTTP_401_UNAUTHORIZED)
        detail = await store.reads.get_alert(_alert_id(alert_id))
        series = await store.web.readings_around(detail.alert, _now())
        return JSONResponse(
            {
                "device_id": series.device_id,
                "metric": series.metric,
                "ts": series.ts,
                "values": series.values,
                "threshold": series.threshold,
                "started_at": series.started_at.timestamp(),
                "timezone": settings.alerts.timezone,
            }
        )

    @router.post("/alerts/{alert_id}/{action}")
    async def alert_action(
        request: Request, alert_id: int, action: str, session: SessionDep, store: StoreDep
    ) -> Response:
        form = await _form(request)
        if session is None or not _csrf_ok(request, session, form):
            return _refused_action(request, session)
        aid = _alert_id(alert_id)
        note = (form.get("note") or "").strip()[:500] or None
        try:
            if action == "ack":
                await store.writes.acknowledge(aid, session.user, note, _now())
            elif action == "resolve":
                await store.writes.resolve(aid, session.user, note, _now())
            elif action == "silence":
                duration = float(form.get("duration_s") or SILENCE_CHOICES_S[0])
                if duration not in SILENCE_CHOICES_S:
                    duration = float(SILENCE_CHOICES_S[0])
                await store.writes.silence_alert(
                    aid, session.user, duration, note or "silenced from the console", _now()
                )
            else:
                return Response(status_code=status.HTTP_404_NOT_FOUND)
        except InvalidTransition as exc:
            return _page(
                request,
                "refused.html",
                {"title": "Not possible now", "message": str(exc), "back": aid},
                status.HTTP_409_CONFLICT,
            )
        return RedirectResponse(f"{CONSOLE_PREFIX}/alerts/{aid}", status.HTTP_303_SEE_OTHER)

    @router.get("/ack/{token}")
    async def link_page(request: Request, token: str, store: StoreDep) -> Response:
        key = await store.link_key()
        try:
            claims = verify(key, token, "ack", _now())
            if await store.writes.link_used(claims.nonce):
                raise LinkRefused("reused", "this link was used already; each link works once")
            detail = await store.reads.get_alert(_alert_id(int(claims.subject)))
        except LinkRefused as exc:
            return _link_refused(request, exc)
        return _page(request, "link.html", {"a": detail.alert, "claims": claims, "done": False})

    @router.post("/ack/{token}")
    async def link_ack(request: Request, token: str, store: StoreDep) -> Response:
        key = await store.link_key()
        try:
            claims = verify(key, token, "ack", _now())
            alert = await store.writes.acknowledge_by_link(claims, _now())
        except LinkRefused as exc:
            return _link_refused(request, exc)
        except InvalidTransition:
            detail = await store.reads.get_alert(int(claims.subject))
            return _page(
                request,
                "link.html",
                {"a": detail.alert, "claims": claims, "done": False},
                status.HTTP_409_CONFLICT,
            )
        return _page(request, "link.html", {"a": alert, "claims": claims, "done": True})

    return router


def _link_refused(request: Request, exc: LinkRefused) -> Response:
    return _page(
        request,
        "refused.html",
        {"title": _LINK_TITLE[exc.reason], "message": f"{exc}. Open the console to act on it."},
        _LINK_STATUS[exc.reason],
    )


def _safe_next(target: str) -> str:
    """Only a path inside the console (no open redirect to another host)."""
    if target.startswith(CONSOLE_PREFIX) and not target.startswith("//"):
        return target
    return CONSOLE_PREFIX


def _token_owner(settings: Settings, token: str) -> str | None:
    given = token.strip().encode("utf-8", "surrogateescape")
    found: str | None = None
    for name, secret in settings.alerts.api_tokens.items():
        if given and hmac.compare_digest(secret.get_secret_value().encode(), given):
            found = name
    return found


async def _overview(request: Request, store: AlertStore, session: Session) -> dict[str, Any]:
    now = _now()
    ov = await store.web.overview(now, FRESH_S, TIMELINE)
    active = await store.reads.list_alerts(AlertFilter(active=True, limit=50))
    recent = await store.reads.list_alerts(AlertFilter(state="resolved", limit=10))
    reports = await store.web.reports()
    return {
        "session": session,
        "ov": ov,
        "ago": lambda at: _ago(at, now),
        "active": active,
        "recent": recent,
        "timeline": _timeline(ov.detections, ov.since, now),
        "reports": reports,
        "report_keys": REPORT_KEYS,
        "report_json": lambda r: json.dumps(
            {k: v for k, v in r.items() if k not in REPORT_KEYS}, ensure_ascii=False, default=str
        )[:200],
        "label": _alert_label,
    }


def _alert_label(a: AlertView) -> str:
    thr = f" (threshold {a.threshold:g})" if a.threshold is not None else ""
    return f"{a.detector} {a.value:g}{thr}"


def install_console(app: FastAPI, settings: Settings) -> None:
    """Serve the console, its assets and the offline Swagger UI on ``app``.

    Args:
        app: the on-call API (built with ``docs_url=None``).
        settings: the whole settings (tokens, console section, time zone).
    """
    app.state.settings = settings
    app.mount(STATIC_PREFIX, StaticFiles(directory=WEB_DIR / "static"), name="console-static")
    app.include_router(console_router())

    @app.exception_handler(LinkRefused)
    async def _refused(request: Request, exc: LinkRefused) -> Response:
        return _link_refused(request, exc)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - docs",
            swagger_js_url=f"{STATIC_PREFIX}/{SWAGGER_DIR}/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC_PREFIX}/{SWAGGER_DIR}/swagger-ui.css",
            swagger_favicon_url=f"{STATIC_PREFIX}/{SWAGGER_DIR}/favicon-32x32.png",
            oauth2_redirect_url="/docs/oauth2-redirect",
            # No badge from the public validator service: nothing leaves this server.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
