"""The ``ghgwatch`` command line: one entry point for every service and tool."""

from __future__ import annotations

import asyncio
import getpass
import json
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from alerts import AlertApi, AlertConsole, AlertService
from core.errors import ConfigurationError, GhgwatchError
from core.logs import configure_logging
from core.settings import Settings, load_settings
from core.stopping import STOP_GRACE_S, run_until_stopped
from dashboards import export_dashboards
from ghgwatch.cli_certs import certs
from ghgwatch.cli_errors import exit_on_error
from ghgwatch.cli_hj212 import hj212_app
from ghgwatch.cli_io import export_command, import_command
from ghgwatch.cli_report import register_report_cli
from ghgwatch.cli_stations import stations_app
from ghgwatch.grafana_push import push_to_grafana
from ghgwatch.replay_db import readings_to_replay_csv
from ghgwatch.stack import Service, resolve, resolve_settings, set_current_settings
from ghgwatch.status import collect_status, render_status
from ghgwatch.up import DEFAULT_EVENTS_EVERY_S, UP_STOP_GRACE_S, UpOptions, run_up
from ingest import Bridge
from processors import Processor
from processors.detector import DetectorService
from processors.replay import replay_csv
from processors.storage import migrate
from reports import ReportScheduler
from sensors_sim import SimulationConfig, run_simulation
from sensors_sim.scenarios import ScenarioConfig, generate_scenarios

__all__ = ["app", "main"]

T = TypeVar("T")

app = typer.Typer(
    name="ghgwatch",
    help="Streaming greenhouse-gas monitoring: MQTT -> Kafka -> TimescaleDB.",
    no_args_is_help=True,
    add_completion=False,
    # typer's rich tracebacks print every local variable by default: settings, tokens, URLs.
    pretty_exceptions_show_locals=False,
)
db_app = typer.Typer(help="Database schema management.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(stations_app, name="stations")
app.command("certs")(certs)
app.add_typer(hj212_app, name="hj212")
app.command("import")(import_command)
app.command("export")(export_command)

_STATE: dict[str, Settings] = {}
# Boolean flags take no value; an empty metavar keeps typer's help from showing "<bool>".
_FLAG = ""


@app.callback()
def _root(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", envvar="GHGWATCH_CONFIG", help="TOML settings file."),
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = None,
    log_format: Annotated[str | None, typer.Option(help="console or json.")] = None,
) -> None:
    """Load settings once; every command below receives them."""
    if config is not None and not config.is_file():
        raise typer.BadParameter(f"no such file: {config}", param_hint="--config")
    try:
        settings = load_settings(config)
    except ConfigurationError as exc:
        typer.secho(f"fatal: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    if log_level or log_format:
        log = settings.log.model_copy(
            update={k: v for k, v in {"level": log_level, "format": log_format}.items() if v}
        )
        settings = settings.model_copy(update={"log": log})
    configure_logging(settings.log)
    _STATE["settings"] = settings
    set_current_settings(settings)


def _settings() -> Settings:
    return _STATE["settings"]


def _live(*uses: Service) -> Settings:
    """The settings with a running `up`'s endpoints overlaid; names the services on stderr."""
    return resolve_settings(_settings(), uses=uses)


register_report_cli(app, lambda: _live("db", "kafka"))


def _run(main_fn: Callable[[asyncio.Event], Awaitable[T]], grace_s: float = STOP_GRACE_S) -> T:
    """Run a service coroutine; SIGINT/SIGTERM set its stop event (a stop overrunning its
    grace, or a second signal, exits 3: core.stopping).

    Exits with status 2 on a :class:`FatalError` and 1 on any other ghgwatch error.
    """
    with exit_on_error():
        return run_until_stopped(main_fn, grace_s=grace_s)


@db_app.command("migrate")
def db_migrate() -> None:
    """Create or upgrade the schema (idempotent; uses TimescaleDB features when present)."""

    settings = _live("db")

    async def main_fn(_stop: asyncio.Event) -> None:
        report = await migrate(settings.db_url(), settings.db)
        for line in report.lines():
            typer.echo(line)

    _run(main_fn)


@app.command()
def bridge(
    max_messages: Annotated[int | None, typer.Option(help="Stop after this many.")] = None,
    timeout_s: Annotated[float | None, typer.Option(help="Stop after this long.")] = None,
) -> None:
    """Run the MQTT -> Kafka bridge (validate, produce, dead-letter, tell devices)."""

    settings = _live("mqtt", "kafka")

    async def main_fn(stop: asyncio.Event) -> None:
        await Bridge(settings).run(stop=stop, max_messages=max_messages, timeout_s=timeout_s)

    _run(main_fn)


@app.command()
def processor(
    max_readings: Annotated[int | None, typer.Option(help="Stop after storing this many.")] = None,
    timeout_s: Annotated[float | None, typer.Option(help="Stop after this long.")] = None,
) -> None:
    """Run the Kafka -> database processor (exactly-once storage of readings, dead letters)."""

    settings = _live("kafka", "db")

    async def main_fn(stop: asyncio.Event) -> None:
        await Processor(settings).run(stop=stop, max_readings=max_readings, timeout_s=timeout_s)

    _run(main_fn)


@app.command()
def simulate(
    kinds: Annotated[str, typer.Option(help="Comma list of city,cems,mine,leak.")] = (
        "city,cems,mine,leak"
    ),
    devices: Annotated[int, typer.Option(help="Devices per kind.")] = 5,
    rate: Annotated[
        float | None, typer.Option(help="Total messages/s; default: each kind's own interval.")
    ] = None,
    duration_s: Annotated[float | None, typer.Option(help="Stop after this long.")] = None,
    messages: Annotated[int | None, typer.Option(help="Stop after this many messages.")] = None,
    batch: Annotated[
        bool, typer.Option(help="Send each device's channels as one batch.", metavar=_FLAG)
    ] = True,
    invalid_rate: Annotated[float, typer.Option(help="Fraction of malformed payloads.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 1,
    progress: Annotated[bool, typer.Option(help="Show a progress display.", metavar=_FLAG)] = True,
) -> None:
    """Publish realistic readings for city stations, CEMS units and mine sensors."""

    found = resolve(_settings())
    typer.echo(found.describe(("mqtt",)), err=True)
    if found.up is None and found.settings.mqtt.url is None:
        # Publishing to whatever listens on 1883 "works" while nothing reaches ghgwatch.
        typer.secho(
            "error: no mqtt.url configured and no `ghgwatch up` running with data dir"
            f" {found.settings.data_dir}: start `ghgwatch up` first (in this folder), or set"
            " GHGWATCH_MQTT__URL to the broker your bridge reads",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(2)
    settings = found.settings
    cfg = SimulationConfig.from_cli(
        kinds=kinds,
        devices_per_kind=devices,
        rate=rate,
        duration_s=duration_s,
        max_messages=messages,
        batch=batch,
        invalid_rate=invalid_rate,
        seed=seed,
        progress=progress,
    )

    async def main_fn(stop: asyncio.Event) -> None:
        stats = await run_simulation(settings, cfg, stop=stop)
        typer.echo(stats.summary())

    _run(main_fn)


@app.command()
def up(
    simulate: Annotated[
        bool, typer.Option("--simulate", help="Also run the simulator.", metavar=_FLAG)
    ] = False,
    devices: Annotated[int, typer.Option(help="Simulated devices per kind.")] = 5,
    invalid_rate: Annotated[float, typer.Option(help="Simulated malformed fraction.")] = 0.01,
    events_every_s: Annotated[
        float,
        typer.Option(
            min=1.0,
            help="With --simulate: inject a mine gas release, a sensor fault or a silent device"
            " this often (seconds), in turn, the first within a minute.",
        ),
    ] = DEFAULT_EVENTS_EVERY_S,
    no_events: Annotated[
        bool, typer.Option("--no-events", help="With --simulate: inject no events.", metavar=_FLAG)
    ] = False,
    timeout_s: Annotated[float | None, typer.Option(help="Stop after this long.")] = None,
    mqtt_broker: Annotated[
        Literal["auto", "mosquitto", "amqtt"],
        typer.Option(
            help="MQTT stand-in when GHGWATCH_MQTT__URL is unset (auto: mosquitto if installed,"
            " else amqtt, which runs the bridge and simulator on MQTT 3.1.1)."
        ),
    ] = "auto",
    tls: Annotated[
        bool, typer.Option("--tls", help="Embedded Mosquitto: TLS listener too.")
    ] = False,
    require_client_cert: Annotated[
        bool,
        typer.Option(
            "--require-client-cert",
            help="With --tls: the TLS listener admits only clients with a certificate from"
            " the development CA (one is made in the data dir's tls/clients).",
        ),
    ] = False,
    no_hj212: Annotated[
        bool,
        typer.Option(
            "--no-hj212", help="Do not run the HJ 212-2017 gateway (gateway.port).", metavar=_FLAG
        ),
    ] = False,
) -> None:
    """Bring the whole pipeline up; embedded stand-ins for services with no URL configured."""

    settings = _settings()
    opts = UpOptions(
        simulate=simulate,
        devices=devices,
        invalid_rate=invalid_rate,
        timeout_s=timeout_s,
        mqtt_broker=mqtt_broker,
        events_every_s=None if no_events else events_every_s,
        tls=tls,
        require_client_cert=require_client_cert,
        hj212=not no_hj212,
    )

    async def main_fn(stop: asyncio.Event) -> None:
        await run_up(settings, opts, stop=stop)

    # up stops its services one after another, each bounded (SERVICE_STOP_TIMEOUT_S), then
    # its stand-ins: its own stop takes longer than one service's.
    _run(main_fn, grace_s=UP_STOP_GRACE_S)


@app.command()
def status(
    as_json: Annotated[
        bool, typer.Option("--json", help="Machine-readable output.", metavar=_FLAG)
    ] = False,
) -> None:
    """Readings per source kind, last-seen per device, dead letters by reason, consumer lag."""

    settings = _settings()
    typer.echo(resolve(settings).describe(("db", "kafka")), err=True)

    async def main_fn(_stop: asyncio.Event) -> None:
        report = await collect_status(settings)
        if as_json:
            typer.echo(json.dumps(report.model_dump(mode="json"), indent=2))
        else:
            render_status(report)

    _run(main_fn)


grafana_app = typer.Typer(help="Grafana dashboards as code.", no_args_is_help=True)
app.add_typer(grafana_app, name="grafana")


@grafana_app.command("export")
def grafana_export(
    out_dir: Annotated[
        Path, typer.Option(help="Folder Grafana provisions dashboards from.")
    ] = Path("deploy/grafana/dashboards"),
) -> None:
    """Write the dashboards (city, CEMS, mine, completeness, pipeline) as Grafana JSON."""

    for path in export_dashboards(out_dir, _settings().detection):
        typer.echo(f"wrote {path}")


@grafana_app.command("push")
def grafana_push(
    grafana_url: Annotated[
        str | None, typer.Option(help="Grafana's base URL (default: alerts.grafana_url).")
    ] = None,
    datasource_host: Annotated[
        str | None,
        typer.Option(help="host:port of the database as Grafana reaches it (default: the URL's)."),
    ] = None,
    prometheus_url: Annotated[
        str | None, typer.Option(help="Also push the Prometheus datasource, pointed here.")
    ] = None,
) -> None:
    """Upload the datasources and every dashboard to a running Grafana (grafana-client)."""
    settings = _live("db")
    url = grafana_url or settings.alerts.grafana_url
    if not url:
        raise typer.BadParameter(
            "no Grafana URL: give --grafana-url or set alerts.grafana_url",
            param_hint="--grafana-url",
        )
    token = settings.alerts.grafana_token
    try:
        report = push_to_grafana(
            url,
            token.get_secret_value() if token else None,
            settings.db_url(),
            datasource_host=datasource_host,
            prometheus_url=prometheus_url,
            detection=settings.detection,
        )
    except GhgwatchError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"pushed to {report.grafana_url}")
    for line in report.lines():
        typer.echo(f"  {line}")


@app.command("alert-service")
def alert_service(
    max_detections: Annotated[int | None, typer.Option(help="Stop after this many.")] = None,
    timeout_s: Annotated[float | None, typer.Option(help="Stop after this long.")] = None,
) -> None:
    """Run the alert service (detections -> alerts -> notifications, escalation, resolve)."""

    settings = _live("kafka", "db", "mqtt")

    async def main_fn(stop: asyncio.Event) -> None:
        # The quarterly report's schedule runs in this process (reports.schedule): services
        # do not import each other, so the app shell composes them.
        async with asyncio.TaskGroup() as tasks:
            if settings.reports.schedule_enabled:
                tasks.create_task(ReportScheduler(settings).run(stop))
            try:
                await AlertService(settings).run(
                    stop=stop, timeout_s=timeout_s, max_detections=max_detections
                )
            finally:
                stop.set()

    _run(main_fn)


@app.command()
def api(
    port: Annotated[int | None, typer.Option(help="Default: alerts.api_port.")] = None,
    timeout_s: Annotated[float | None, typer.Option(help="Stop after this long.")] = None,
) -> None:
    """Serve the on-call HTTP API (OpenAPI docs at /docs; bearer tokens: alerts.api_tokens)."""

    settings = _live("db")

    async def main_fn(stop: asyncio.Event) -> None:
        await AlertApi(settings, port=port).run(stop=stop, timeout_s=timeout_s)

    _run(main_fn)


alerts_app = typer.Typer(help="On-call: list, show, ack, resolve, silence.", no_args_is_help=True)
app.add_typer(alerts_app, name="alerts")
_JSON_OPT = typer.Option("--json", help="Machine-readable output.", metavar=_FLAG)


def _alerts(action: str, as_json: bool, **kw: object) -> None:

    settings = _live("db")
    if "by" in kw and kw["by"] is None:
        kw["by"] = getpass.getuser()

    async def main_fn(_stop: asyncio.Event) -> None:
        typer.echo(await AlertConsole(settings).run(action, as_json=as_json, **kw))  # type: ignore[arg-type]

    _run(main_fn)


@alerts_app.command("list")
def alerts_list(
    state: Annotated[str | None, typer.Option(help="open, acknowledged or resolved.")] = None,
    show_all: Annotated[
        bool, typer.Option("--all", help="Include resolved alerts.", metavar=_FLAG)
    ] = False,
    severity: Annotated[str | None, typer.Option(help="info/maintenance/warning/critical.")] = None,
    network: Annotated[str | None, typer.Option()] = None,
    site: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option()] = 50,
    as_json: Annotated[bool, _JSON_OPT] = False,
) -> None:
    """Alerts, newest first (active ones unless --all or --state)."""
    active = None if show_all or state else True
    _alerts(
        "list",
        as_json,
        state=state,
        active=active,
        severity=severity,
        network=network,
        site=site,
        limit=limit,
    )


@alerts_app.command("show")
def alerts_show(alert_id: int, as_json: Annotated[bool, _JSON_OPT] = False) -> None:
    """One alert with its detections, history and notifications."""
    _alerts("show", as_json, alert_id=alert_id)


@alerts_app.command("ack")
def alerts_ack(
    alert_id: int,
    by: Annotated[str | None, typer.Option(help="Who (default: login name).")] = None,
    note: Annotated[str | None, typer.Option()] = None,
    as_json: Annotated[bool, _JSON_OPT] = False,
) -> None:
    """Acknowledge an alert (stops escalation)."""
    _alerts("ack", as_json, alert_id=alert_id, by=by, note=note)


@alerts_app.command("resolve")
def alerts_resolve(
    alert_id: int,
    by: Annotated[str | None, typer.Option(help="Who (default: login name).")] = None,
    note: Annotated[str | None, typer.Option()] = None,
    as_json: Annotated[bool, _JSON_OPT] = False,
) -> None:
    """Resolve an alert by hand."""
    _alerts("resolve", as_json, alert_id=alert_id, by=by, note=note)


@alerts_app.command("silence")
def alerts_silence(
    alert_id: int,
    duration_s: Annotated[
        float | None, typer.Option(help="Default: alerts.silence_default_s.")
    ] = None,
    reason: Annotated[str, typer.Option()] = "silenced from the CLI",
    by: Annotated[str | None, typer.Option(help="Who (default: login name).")] = None,
    as_json: Annotated[bool, _JSON_OPT] = False,
) -> None:
    """Silence an alert's site and group: recorded, not notified."""
    _alerts("silence", as_json, alert_id=alert_id, duration_s=duration_s, reason=reason, by=by)


@app.command()
def detector(
    max_readings: Annotated[int | None, typer.Option(help="Stop after this many.")] = None,
    timeout_s: Annotated[float | None, typer.Option(help="Stop after this long.")] = None,
) -> None:
    """Run the detector (readings topic -> detections table and topic)."""

    settings = _live("kafka", "db")

    async def main_fn(stop: asyncio.Event) -> None:
        svc = DetectorService(settings)
        await svc.run(stop=stop, max_readings=max_readings, timeout_s=timeout_s)

    _run(main_fn)


@app.command()
def replay(
    readings: Annotated[
        Path | None,
        typer.Argument(help="Long-format CSV: time,device_id,metric,value (or --from-db)"),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Detections CSV (one row per onset).")] = None,
    kind: Annotated[
        str | None,
        typer.Option(help="city, cems, mine, leak (topic kinds; also leak_monitor) or generic."),
    ] = None,
    labels: Annotated[
        Path | None, typer.Option(help="Labels CSV (device_id,start,end) to score.")
    ] = None,
    from_db: Annotated[
        bool,
        typer.Option(
            "--from-db",
            help="Replay stored readings from the database (a running `up`'s when none is"
            " configured) instead of a CSV.",
        ),
    ] = False,
    since: Annotated[
        datetime | None, typer.Option(help="--from-db: from this time (UTC if no zone).")
    ] = None,
    until: Annotated[
        datetime | None, typer.Option(help="--from-db: until this time (default now).")
    ] = None,
    device: Annotated[
        list[str] | None, typer.Option(help="--from-db: this device id (repeat; default all).")
    ] = None,
) -> None:
    """Run the streaming detectors over a CSV, or stored readings, in time order (backtest,
    tuning; nothing is written to the database)."""

    if from_db:
        if readings is not None:
            raise typer.BadParameter("give a CSV or --from-db, not both", param_hint="READINGS")
        if since is None:
            raise typer.BadParameter("--from-db needs --since", param_hint="--since")
        settings = _live("db")
        start = since if since.tzinfo else since.replace(tzinfo=UTC)
        end = until or datetime.now(UTC)
        end = end if end.tzinfo else end.replace(tzinfo=UTC)
        tmp = tempfile.TemporaryDirectory(prefix="ghgwatch-replay-")
        readings = Path(tmp.name) / "readings.csv"
        n = asyncio.run(
            readings_to_replay_csv(settings, readings, devices=device or [], since=start, until=end)
        )
        typer.echo(f"{n:,} stored readings from {start.isoformat()} to {end.isoformat()}", err=True)
    elif readings is None:
        raise typer.BadParameter("give a readings CSV or --from-db", param_hint="READINGS")
    if not readings.is_file():
        raise typer.BadParameter(f"no such file: {readings}", param_hint="READINGS")

    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    console = Console(stderr=True)  # stdout keeps only the summary, for scripts
    try:
        with Progress(
            *columns, console=console, transient=True, disable=not console.is_terminal
        ) as bar:
            task = bar.add_task("replaying", total=None)
            result = replay_csv(
                readings,
                _settings().detection,
                out=out,
                kind=kind,
                labels=labels,
                on_progress=lambda n: bar.update(task, description=f"replayed {n:,} readings"),
            )
    except (GhgwatchError, ValueError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    typer.echo(
        f"{result.readings} readings ({result.late} late) -> {result.onsets} detections in "
        f"{result.seconds:.1f} s ({result.readings_per_s:,.0f} readings/s)"
    )
    if result.quality is not None:
        for line in result.quality.lines():
            typer.echo(line)


@app.command()
def scenarios(
    out: Annotated[Path, typer.Option(help="Directory for readings.csv and labels.csv.")],
    seed: Annotated[int, typer.Option(help="Random seed.")] = 1,
    hours: Annotated[float, typer.Option(help="Length of the scenario.")] = 48.0,
) -> None:
    """Write a labelled scenario set (releases, outbursts, plumes, CEMS faults, sensor faults)."""

    summary = generate_scenarios(out, seed, ScenarioConfig(hours=hours))
    typer.echo(f"{summary.readings} readings, {summary.labels} labels -> {out}")
    for label, count in sorted(summary.by_label.items()):
        typer.echo(f"  {label}: {count}")


def main() -> None:
    """Console-script entry point."""
    app()
