"""``ghgwatch stations``: register devices and issue their broker credentials.

Every command works on the registry (``db.url``) and, by ``registry.apply``, on the broker:
``dynsec`` changes a running Mosquitto through its dynamic-security API (admin password in
``GHGWATCH_REGISTRY__ADMIN_PASSWORD``), ``files`` rewrites its password and ACL files and
makes it reread them (``registry.reload_pid_file`` or ``registry.reload_command``).
Passwords are printed once and stored only as hashes.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import asyncpg
import typer
from pydantic import ValidationError

from core.errors import ConfigurationError
from core.settings import RegistrySettings, Settings, load_settings
from ghgwatch.cli_errors import exit_on_error
from ghgwatch.stack import resolve_settings
from processors.storage import migrate
from registry import (
    BRIDGE_ROLE,
    NOTIFIER_ROLE,
    BrokerApplier,
    DeviceRecord,
    DynsecApplier,
    DynsecClient,
    FilesApplier,
    Issued,
    NoBroker,
    Onboarding,
    acl_file_text,
    auth_lines,
    broker_reloader,
    generate_password,
    initial_config,
    mosquitto_password_line,
    parse_csv,
    parse_units,
    write_private,
)

__all__ = ["stations_app"]

T = TypeVar("T")

stations_app = typer.Typer(
    help="Device registry: register stations, issue and revoke their MQTT credentials.",
    no_args_is_help=True,
)


def _settings(ctx: typer.Context) -> Settings:
    """The loaded settings, with a running ``up``'s database and broker for unset URLs."""
    config = ctx.find_root().params.get("config")
    return resolve_settings(load_settings(config), uses=("db", "mqtt"))


def _run(fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    with exit_on_error():
        return asyncio.run(fn())


def _files_reload(reg: RegistrySettings) -> Callable[[], Awaitable[None]]:
    """How the broker rereads its files; with no way set, the operator is told to reload it."""
    reload = broker_reloader(reg.reload_pid_file, reg.reload_command)
    if reload is not None:
        return reload

    async def remind() -> None:
        typer.secho(
            f"warning: {reg.password_file} and {reg.acl_file} written, but the broker keeps"
            " its old credentials until it rereads them (SIGHUP); set"
            " registry.reload_pid_file or registry.reload_command to have it done",
            fg=typer.colors.YELLOW,
            err=True,
        )

    return remind


def _broker(settings: Settings) -> BrokerApplier:
    reg = settings.registry
    if reg.apply == "none":
        return NoBroker()
    if reg.apply == "files":
        return FilesApplier(
            reg.password_file,
            reg.acl_file,
            root=settings.mqtt.topic_root,
            alerts_root=settings.alerts.mqtt_topic_root,
            bridge_users=reg.bridge_users,
            notifier_user=reg.notifier_user,
            reload=_files_reload(reg),
        )
    if reg.admin_password is None:
        raise ConfigurationError(
            "registry.apply is dynsec but no admin password: set"
            " GHGWATCH_REGISTRY__ADMIN_PASSWORD (printed by `ghgwatch stations init-broker`)"
            " or registry.apply = files/none"
        )
    url = reg.broker_url or settings.mqtt_url()
    password = reg.admin_password.get_secret_value()

    def connect() -> DynsecClient:
        return DynsecClient(
            url, reg.admin_username, password, settings.mqtt.topic_root, timeout_s=reg.timeout_s
        )

    return DynsecApplier(connect)


async def _with_onboarding(settings: Settings, fn: Callable[[Onboarding], Awaitable[T]]) -> T:
    await migrate(settings.db_url(), settings.db)
    conn = await asyncpg.connect(settings.db_url())
    try:
        return await fn(Onboarding(conn, _broker(settings)))
    finally:
        await conn.close()


def _show_issued(issued: Issued, settings: Settings) -> None:
    root = settings.mqtt.topic_root
    typer.echo(f"device     {issued.device.device_id} ({issued.device.kind.value})")
    typer.echo(f"username   {issued.username}")
    typer.echo(f"password   {issued.password}")
    typer.echo(f"publish    {issued.device.data_topic(root)}")
    typer.echo(f"subscribe  {issued.device.status_topic(root)}")
    typer.secho(
        "The password is shown only this once; ghgwatch keeps only its hash.",
        fg=typer.colors.YELLOW,
    )


@stations_app.command("add")
def add(
    ctx: typer.Context,
    device_id: Annotated[
        str, typer.Argument(help="network/site/device, e.g. ordos-coal/buertai/t4-0101")
    ],
    kind: Annotated[str, typer.Option(help="city, cems, mine or leak")],
    location: Annotated[
        str | None,
        typer.Option(help="mine CH4 sensor class: T0-T8, main_return, wing_return, other"),
    ] = None,
    units: Annotated[
        str | None, typer.Option(help="metrics it reports: 'co2_ppm;ch4_ppb' or 'metric=unit;...'")
    ] = None,
    cems_class: Annotated[
        str | None, typer.Option(help="CEMS unit benchmark class, e.g. 600mw_sc")
    ] = None,
    site_pressure_pa: Annotated[
        float | None, typer.Option(help="barometric pressure at the site")
    ] = None,
    site_altitude_m: Annotated[
        float | None, typer.Option(help="site altitude (pressure from it)")
    ] = None,
    sampling_interval_s: Annotated[
        float | None, typer.Option(help="seconds between readings")
    ] = None,
    lat: Annotated[float | None, typer.Option()] = None,
    lon: Annotated[float | None, typer.Option()] = None,
    hj212_mn: Annotated[str | None, typer.Option(help="HJ 212 MN of its data logger")] = None,
    hj212_password: Annotated[
        bool, typer.Option("--hj212-password", help="prompt for the logger's HJ 212 PW")
    ] = False,
    disabled: Annotated[bool, typer.Option(help="register it disabled")] = False,
) -> None:
    """Register a device and issue its MQTT username and password (shown once)."""
    settings = _settings(ctx)
    values: dict[str, Any] = {
        "device_id": device_id, "kind": kind, "location_class": location,
        "units": parse_units(units or ""), "cems_class": cems_class,
        "site_pressure_pa": site_pressure_pa,
        "site_altitude_m": site_altitude_m, "sampling_interval_s": sampling_interval_s,
        "lat": lat, "lon": lon, "hj212_mn": hj212_mn, "enabled": not disabled,
    }  # fmt: skip
    try:
        record = DeviceRecord.model_validate(values)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"])
        raise typer.BadParameter(f"{where}: {err['msg']}" if where else err["msg"]) from None
    pw = typer.prompt("HJ 212 PW", hide_input=True) if hj212_password else None
    issued = _run(lambda: _with_onboarding(settings, lambda ob: ob.add(record, pw)))
    _show_issued(issued, settings)


def _describe(d: DeviceRecord) -> dict[str, Any]:
    out = d.model_dump(mode="json", exclude={"hj212_password_hash"})
    out["hj212_password_set"] = d.hj212_password_hash is not None
    return out


@stations_app.command("list")
def list_(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """Every registered device."""
    settings = _settings(ctx)
    devices = _run(lambda: _with_onboarding(settings, lambda ob: ob.store.list_devices()))
    for d in devices:
        if as_json:
            typer.echo(json.dumps(_describe(d)))
        else:
            state = "enabled " if d.enabled else "DISABLED"
            loc = d.location_class.value if d.location_class else "-"
            typer.echo(f"{state}  {d.kind.value:<5} {d.device_id:<48} {loc:<12} {d.mqtt_username}")


@stations_app.command("show")
def show(ctx: typer.Context, device_id: str) -> None:
    """One device's registry record (no secrets)."""
    settings = _settings(ctx)
    found = _run(lambda: _with_onboarding(settings, lambda ob: ob.store.get(device_id)))
    if found is None:
        typer.secho(f"error: {device_id}: not registered", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(_describe(found), indent=2))


def _switch(ctx: typer.Context, device_id: str, enabled: bool) -> None:
    settings = _settings(ctx)
    device = _run(lambda: _with_onboarding(settings, lambda ob: ob.set_enabled(device_id, enabled)))
    what = "enabled" if device.enabled else "disabled (its connection is cut)"
    typer.echo(f"{device.device_id}: {what}")


@stations_app.command("disable")
def disable(ctx: typer.Context, device_id: str) -> None:
    """Refuse a device at once: its connection is cut and it cannot log in."""
    _switch(ctx, device_id, False)


@stations_app.command("enable")
def enable(ctx: typer.Context, device_id: str) -> None:
    """Let a disabled device log in again (same password)."""
    _switch(ctx, device_id, True)


@stations_app.command("rotate")
def rotate(ctx: typer.Context, device_id: str) -> None:
    """Issue a new password (shown once); the old one stops working at once."""
    settings = _settings(ctx)
    issued = _run(lambda: _with_onboarding(settings, lambda ob: ob.rotate(device_id)))
    _show_issued(issued, settings)


@stations_app.command("import")
def import_(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV with a header")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="check and report only")] = False,
    credentials_out: Annotated[
        Path, typer.Option(help="where the issued usernames and passwords go (mode 0600)")
    ] = Path("station-credentials.csv"),
) -> None:
    """Register every valid new row of a CSV; report each row with its line number."""
    settings = _settings(ctx)
    try:
        rows = parse_csv(file.read_text(encoding="utf-8-sig"))
    except (ValueError, UnicodeDecodeError) as exc:
        typer.secho(f"error: {file}: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    report = _run(
        lambda: _with_onboarding(settings, lambda ob: ob.import_rows(rows, dry_run=dry_run))
    )
    for line, device_id, status, reason in report.rows:
        typer.echo(f"line {line:>5}  {status:<9}  {device_id}" + (f"  {reason}" if reason else ""))
    counts: dict[str, int] = {}
    for _, _, status, _ in report.rows:
        counts[status] = counts.get(status, 0) + 1
    typer.echo(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no rows")
    if report.issued:
        lines = ["device_id,username,password"]
        lines += [f"{i.device.device_id},{i.username},{i.password}" for i in report.issued]
        write_private(credentials_out, "\n".join(lines) + "\n")
        typer.echo(f"credentials of {len(report.issued)} devices written to {credentials_out}")
    if not report.ok:
        raise typer.Exit(1)


@stations_app.command("init-broker")
def init_broker(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="folder for the broker's files")] = Path(
        "deploy/mosquitto/generated"
    ),
    files: Annotated[
        bool, typer.Option("--files", help="password/ACL files instead of dynsec")
    ] = False,
    config_dir: Annotated[
        str | None, typer.Option(help="the folder as the broker sees it (e.g. /mosquitto/config)")
    ] = None,
) -> None:
    """Write a new broker's credentials: admin, bridges and notifier (passwords shown once).

    Dynamic security (default): ``dynamic-security.json`` and ``auth.conf`` to include in
    mosquitto.conf. ``--files``: ``mosquitto.passwd`` and ``acl`` with the services only
    (``stations add`` adds devices to them). Existing files are never overwritten.
    """
    settings = _settings(ctx)
    reg = settings.registry
    seen = Path(config_dir) if config_dir else out.resolve()
    logins = {u: generate_password() for u in (*reg.bridge_users, reg.notifier_user)}
    targets = [out / "mosquitto.passwd", out / "acl"] if files else [out / "dynamic-security.json"]
    taken = [p for p in targets if p.exists()]
    if taken:
        typer.secho(f"error: {taken[0]} exists; not overwritten", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    if files:
        write_private(
            out / "mosquitto.passwd",
            "".join(mosquitto_password_line(u, p) + "\n" for u, p in logins.items()),
        )
        write_private(out / "acl", acl_file_text(
            [], root=settings.mqtt.topic_root, alerts_root=settings.alerts.mqtt_topic_root,
            bridge_users=reg.bridge_users, notifier_user=reg.notifier_user,
        ))  # fmt: skip
        auth = auth_lines(password_file=seen / "mosquitto.passwd", acl_file=seen / "acl")
    else:
        admin_pw = secrets.token_urlsafe(24)
        logins = {reg.admin_username: admin_pw, **logins}
        config = initial_config(
            admin=(reg.admin_username, admin_pw),
            root=settings.mqtt.topic_root,
            alerts_root=settings.alerts.mqtt_topic_root,
            clients=[(u, logins[u], BRIDGE_ROLE) for u in reg.bridge_users]
            + [(reg.notifier_user, logins[reg.notifier_user], NOTIFIER_ROLE)],
        )
        write_private(out / "dynamic-security.json", json.dumps(config, indent=2) + "\n")
        try:
            auth = auth_lines(dynsec_config=seen / "dynamic-security.json")
        except ValueError as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None
    write_private(out / "auth.conf", auth)
    typer.echo(f"wrote {', '.join(str(p) for p in targets)} and {out / 'auth.conf'}")
    for user, password in logins.items():
        typer.echo(f"{user:<24} {password}")
    typer.secho("These passwords are shown only this once.", fg=typer.colors.YELLOW)
