"""Brokers without the plugin: ``ghgwatch stations`` rewrites the password and ACL files and
makes the broker reload them (``registry.reload_pid_file`` / ``registry.reload_command``), so
disabling or rotating cuts a connected device off at once while the others stay connected."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiomqtt
import pytest
from registry_helpers import BRIDGE_USER, NOTIFIER_USER, ROOT, Broker, device_client, device_refused

from ghgwatch.embedded import mosquitto_binary
from registry.credentials import mosquitto_password_line
from registry.files import acl_file_text
from registry.models import DeviceRecord

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")

WAIT_S = 10.0
A = DeviceRecord(device_id="beifang-power/dalate-plant/unit-3", kind="cems", cems_class="600mw_sc")
B = DeviceRecord(device_id="baotou/kundulun/picarro-01", kind="city")
C = DeviceRecord(device_id="ordos-coal/buertai/t4-0101", kind="mine", location_class="T4")


@contextlib.asynccontextmanager
async def _device(port: int, user: str, password: str) -> AsyncIterator[aiomqtt.Client]:
    async with device_client(port, user, password, WAIT_S) as client:
        yield client


async def _refused(port: int, user: str, password: str) -> bool:
    return await device_refused(port, user, password, WAIT_S)


async def _cut_off(client: aiomqtt.Client) -> bool:
    """True when the broker drops the connection within WAIT_S."""
    try:
        async with asyncio.timeout(WAIT_S):
            await anext(aiter(client.messages))
    except aiomqtt.MqttError:
        return True
    except TimeoutError:
        return False
    return False


async def _alive(client: aiomqtt.Client, device: DeviceRecord) -> None:
    """A QoS 1 publish is acknowledged: the connection is still up."""
    await client.publish(device.data_topic(ROOT), b"still here", qos=1, timeout=WAIT_S)


def _credentials(out: str) -> tuple[str, str]:
    fields = dict(ln.split(maxsplit=1) for ln in out.splitlines() if ln.strip())
    return fields["username"], fields["password"]


async def test_cli_disable_and_rotate_cut_connected_devices_off(
    files_broker: Callable[[Path, Path], Awaitable[Broker]], pg_url: str, tmp_path: Path
) -> None:
    """The commands an operator types, against a Mosquitto using the generated files."""
    passwd, acl = tmp_path / "mosquitto.passwd", tmp_path / "acl"
    passwd.write_text(mosquitto_password_line(BRIDGE_USER, "bridge-pw") + "\n")
    acl_text = acl_file_text(
        [], root=ROOT, alerts_root=f"{ROOT}/alerts",
        bridge_users=(BRIDGE_USER,), notifier_user=NOTIFIER_USER,
    )  # fmt: skip
    acl.write_text(acl_text)
    broker = await files_broker(passwd, acl)
    assert broker.proc.proc is not None
    pid = broker.proc.proc.pid
    # what `pid_file` (daemon mode) or systemd's PIDFile= leaves for the operator
    pid_file = tmp_path / "mosquitto.pid"
    pid_file.write_text(f"{pid}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHGWATCH_")}
    env.update({
        "GHGWATCH_DATA_DIR": str(tmp_path / "data"), "GHGWATCH_DB__URL": pg_url,
        "GHGWATCH_MQTT__TOPIC_ROOT": ROOT, "GHGWATCH_ALERTS__MQTT_TOPIC_ROOT": f"{ROOT}/alerts",
        "GHGWATCH_REGISTRY__APPLY": "files", "GHGWATCH_REGISTRY__PASSWORD_FILE": str(passwd),
        "GHGWATCH_REGISTRY__ACL_FILE": str(acl),
        "GHGWATCH_REGISTRY__RELOAD_PID_FILE": str(pid_file),
    })  # fmt: skip

    async def cli(*args: str) -> str:
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "ghgwatch", "stations", *args], env=env,
            cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    a = _credentials(await cli("add", A.device_id, "--kind", "cems", "--cems-class", "600mw_sc"))
    b = _credentials(await cli("add", B.device_id, "--kind", "city"))
    c = _credentials(await cli("add", C.device_id, "--kind", "mine", "--location", "T4"))
    port = broker.port
    async with (
        _device(port, *a) as dev_a,
        _device(port, *b) as dev_b,
        _device(port, *c) as dev_c,
    ):  # the adds were applied without a restart
        for dev, rec in ((dev_a, A), (dev_b, B), (dev_c, C)):
            await _alive(dev, rec)

        await cli("disable", A.device_id)
        assert await _cut_off(dev_a)
        await _alive(dev_b, B)
        await _alive(dev_c, C)
        assert await _refused(port, *a)

        # the same with a reload command instead of the pid file
        env.pop("GHGWATCH_REGISTRY__RELOAD_PID_FILE")
        env["GHGWATCH_REGISTRY__RELOAD_COMMAND"] = f"kill -HUP {pid}"
        rotated = _credentials(await cli("rotate", B.device_id))
        assert rotated[1] != b[1]
        assert await _cut_off(dev_b)
        await _alive(dev_c, C)
    assert await _refused(port, *b)
    async with _device(port, *rotated) as dev_b:
        await _alive(dev_b, B)


async def test_cli_reload_failure_changes_nothing(pg_url: str, tmp_path: Path) -> None:
    """A broker that cannot be reloaded: an error, and neither registry nor files change."""
    passwd, acl = tmp_path / "mosquitto.passwd", tmp_path / "acl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHGWATCH_")}
    env.update({
        "GHGWATCH_DATA_DIR": str(tmp_path / "data"), "GHGWATCH_DB__URL": pg_url,
        "GHGWATCH_REGISTRY__APPLY": "files", "GHGWATCH_REGISTRY__PASSWORD_FILE": str(passwd),
        "GHGWATCH_REGISTRY__ACL_FILE": str(acl),
        "GHGWATCH_REGISTRY__RELOAD_PID_FILE": str(tmp_path / "no-such.pid"),
    })  # fmt: skip

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ghgwatch", "stations", *args], env=env, cwd=tmp_path,
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    added = cli("add", B.device_id, "--kind", "city")
    assert added.returncode != 0
    assert "no-such.pid" in added.stderr
    assert not passwd.exists() or B.mqtt_username not in passwd.read_text()
    listed = cli("list")
    assert listed.returncode == 0, listed.stderr
    assert B.device_id not in listed.stdout
