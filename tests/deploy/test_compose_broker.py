"""The compose broker, the registry settings and the services' broker logins agree.

Issue 11: ``registry.apply`` defaults to "dynsec", so ``ghgwatch stations add`` on the
production stack needs a Mosquitto with the dynamic-security plugin, its JSON on a writable
volume, an admin whose password ghgwatch.toml's [registry] gets from deploy/.env, and a
client (with the right role) for every login the compose services use. Checked statically,
then on the real broker: the shipped dynsec config with the file compose's broker-init writes.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml

from adapters.ports import free_port
from core.settings import Settings, load_settings
from ghgwatch.embedded import ManagedProcess, mosquitto_binary
from registry.acl import ADMIN_ROLE, BRIDGE_ROLE
from registry.brokerconf import find_dynsec_plugin
from registry.certs import make_dev_ca, make_server_cert
from registry.dynsec import DynsecClient
from registry.models import DeviceRecord

_VAR = re.compile(r"^\$\{(\w+)(?::?[-?][^}]*)?\}$")
_SUBST = re.compile(r"\$\{(\w+)(?::?[-?][^}]*)?\}")
WAIT_S = 10.0


@pytest.fixture
def compose(repo_root: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((repo_root / "deploy" / "compose.yaml").read_text())
    return data


def _mounts(svc: dict[str, Any]) -> dict[str, str]:
    """source -> target of a service's volumes."""
    out = {}
    for volume in svc.get("volumes", []):
        src, _, rest = volume.partition(":")
        out[src] = rest.split(":", 1)[0]
    return out


def _var(value: object) -> str:
    """The deploy/.env variable a compose value is taken from (never a literal secret)."""
    m = _VAR.match(str(value))
    assert m, f"not from the environment: {value!r}"
    return m.group(1)


def _broker_conf(repo_root: Path, compose: dict[str, Any]) -> tuple[Path, list[str]]:
    mounts = _mounts(compose["services"]["mosquitto"])
    [src] = [s for s, t in mounts.items() if t == "/mosquitto/config/mosquitto.conf"]
    path = (repo_root / "deploy" / src).resolve()
    lines = [x.strip() for x in path.read_text().splitlines()]
    return path, [x for x in lines if x and not x.startswith("#")]


def _value(lines: list[str], key: str) -> str | None:
    found = [x.partition(" ")[2].strip() for x in lines if x.partition(" ")[0] == key]
    return found[-1] if found else None


def _env(svc: dict[str, Any]) -> dict[str, str]:
    return {
        k: _SUBST.sub(lambda m: f"secret-{m.group(1).lower()}", str(v))
        for k, v in svc["environment"].items()
    }


def _settings(repo_root: Path, svc: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in list(os.environ):
        if key.startswith("GHGWATCH_"):
            monkeypatch.delenv(key)
    for key, value in _env(svc).items():
        if key.startswith("GHGWATCH_") and key != "GHGWATCH_CONFIG":
            monkeypatch.setenv(key, value)
    return load_settings(repo_root / "deploy" / "ghgwatch" / "ghgwatch.toml")


def _init_clients(svc: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """broker-init's command: the file it writes and {username: env var of its password}."""
    out, *pairs = svc["command"]
    clients = dict(p.split("=", 1) for p in pairs)
    return out, {user: _var(svc["environment"][var]) for user, var in clients.items()}


def test_compose_runs_the_shipped_dynsec_config_with_its_file_on_a_volume(
    compose: dict[str, Any], repo_root: Path
) -> None:
    """The compose Mosquitto runs deploy/mosquitto/mosquitto-dynsec.conf: the plugin, no
    anonymous clients, client ids bound to usernames on every listener, and the plugin's
    JSON on a named (persistent, writable) volume that broker-init fills before it starts."""
    services = compose["services"]
    mqtt = services["mosquitto"]
    path, lines = _broker_conf(repo_root, compose)
    assert path.name == "mosquitto-dynsec.conf"
    assert _value(lines, "allow_anonymous") == "false"
    assert _value(lines, "plugin") == "/usr/lib/mosquitto_dynamic_security.so"
    assert _value(lines, "password_file") is None
    assert _value(lines, "acl_file") is None
    listeners = [i for i, x in enumerate(lines) if x.startswith("listener ")]
    assert len(listeners) == 2
    for start, end in zip(listeners, [*listeners[1:], len(lines)], strict=True):
        assert "use_username_as_clientid true" in lines[start:end], lines[start]
    dynsec_file = _value(lines, "plugin_opt_config_file")
    assert dynsec_file is not None
    volumes = {t: s for s, t in _mounts(mqtt).items() if not s.startswith(".")}
    [(target, volume)] = [(t, s) for t, s in volumes.items() if dynsec_file.startswith(t + "/")]
    assert volume in compose["volumes"]
    init = services["broker-init"]
    assert _mounts(init)[volume] == target
    out, _ = _init_clients(init)
    assert out == dynsec_file
    assert mqtt["depends_on"]["broker-init"]["condition"] == "service_completed_successfully"
    assert init["restart"] == "no"


def test_registry_settings_and_service_logins_agree_with_the_broker(
    compose: dict[str, Any], repo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ghgwatch.toml's [registry] manages this broker through dynsec on a port it listens
    on, as the admin broker-init creates (password from deploy/.env); every bridge's login
    is a registry bridge user broker-init creates with that bridge's password, and the
    exporter's login (and the broker's health check) is created with the exporter's."""
    services = compose["services"]
    _, lines = _broker_conf(repo_root, compose)
    ports = {int(x.split()[1]) for x in lines if x.startswith("listener ")}
    tool = services["stations"]
    reg = _settings(repo_root, tool, monkeypatch).registry
    assert reg.apply == "dynsec"
    assert reg.broker_url is not None
    host, _, port = reg.broker_url.removeprefix("mqtt://").partition(":")
    assert host == "mosquitto"
    assert int(port) in ports
    admin_var = _var(tool["environment"]["GHGWATCH_REGISTRY__ADMIN_PASSWORD"])
    assert reg.admin_password is not None
    init = services["broker-init"]
    assert _var(init["environment"]["GHGWATCH_REGISTRY__ADMIN_PASSWORD"]) == admin_var
    init_reg = _settings(repo_root, init, monkeypatch).registry
    assert init_reg.admin_username == reg.admin_username
    # only the registry tool and broker-init hold the admin password
    for name, svc in services.items():
        if name not in {"stations", "broker-init"}:
            assert "GHGWATCH_REGISTRY__ADMIN_PASSWORD" not in (svc.get("environment") or {})
    _, clients = _init_clients(init)
    bridges = [n for n, s in services.items() if s.get("command") == ["bridge"]]
    assert len(bridges) == 2
    for name in bridges:
        env = services[name]["environment"]
        user = env.get("GHGWATCH_MQTT__USERNAME")
        assert user in reg.bridge_users, name
        assert user == env["GHGWATCH_MQTT__CLIENT_ID"], name
        assert clients[user] == _var(env["GHGWATCH_MQTT__PASSWORD"]), name
    assert set(reg.bridge_users) <= set(clients)
    exporter = services["mosquitto-exporter"]["environment"]
    assert clients[exporter["MQTT_USER"]] == _var(exporter["MQTT_PASS"])
    health = " ".join(services["mosquitto"]["healthcheck"]["test"])
    assert f"-u {exporter['MQTT_USER']} " in health
    assert (
        _var(services["mosquitto"]["environment"]["HEALTH_PASSWORD"])
        == clients[exporter["MQTT_USER"]]
    )
    example = (repo_root / "deploy" / "env.example").read_text()
    for var in {admin_var, *clients.values()}:
        assert re.search(rf"^{var}=", example, re.M), var


@pytest.mark.skipif(
    mosquitto_binary() is None or find_dynsec_plugin() is None,
    reason="mosquitto with the dynamic-security plugin is not installed",
)
async def test_broker_init_file_runs_the_shipped_dynsec_config(
    compose: dict[str, Any], repo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """broker-init's script, run as compose runs it, writes a file the real broker starts
    from with the shipped dynsec config: the bridges log in and read the wire topics, the
    exporter reads $SYS, the admin onboards a device (as `stations add`), anonymous clients
    are refused; a second run leaves the (by now broker-owned) file alone."""
    services = compose["services"]
    init = services["broker-init"]
    out, clients = _init_clients(init)
    script_src = next(s for s, t in _mounts(init).items() if t == init["entrypoint"][-1])
    script = (repo_root / "deploy" / script_src).resolve()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHGWATCH_")}
    env.update(_env(init))
    env["GHGWATCH_CONFIG"] = str(repo_root / "deploy" / "ghgwatch" / "ghgwatch.toml")
    dynsec = tmp_path / "dynamic-security.json"
    argv = [sys.executable, str(script), str(dynsec), *init["command"][1:]]
    done = subprocess.run(argv, check=False, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    written = json.loads(dynsec.read_text())
    assert "secret-" not in dynsec.read_text()
    users = {c["username"]: {r["rolename"] for r in c["roles"]} for c in written["clients"]}
    reg = _settings(repo_root, services["stations"], monkeypatch).registry
    assert ADMIN_ROLE in users[reg.admin_username]
    assert all(BRIDGE_ROLE in users[u] for u in reg.bridge_users)

    port, tls_port = free_port(0), free_port(0)
    tls = tmp_path / "tls"
    make_server_cert(make_dev_ca(tls), tls, ["localhost"])
    text = (repo_root / "deploy" / "mosquitto" / "mosquitto-dynsec.conf").read_text()
    for old, new in {
        "listener 1883 0.0.0.0": f"listener {port} 127.0.0.1",
        "listener 8883 0.0.0.0": f"listener {tls_port} 127.0.0.1",
        "/mosquitto/config/tls/": f"{tls}/",
        "/usr/lib/mosquitto_dynamic_security.so": str(find_dynsec_plugin()),
        out: str(dynsec),
        "/mosquitto/data/": f"{tmp_path}/",
    }.items():
        assert old in text, old
        text = text.replace(old, new)
    (tmp_path / "mosquitto.conf").write_text(text + "\nuser root\n")
    binary = mosquitto_binary()
    assert binary is not None
    broker = await ManagedProcess(
        "mosquitto",
        [binary, "-c", str(tmp_path / "mosquitto.conf")],
        "127.0.0.1",
        port,
        tmp_path / "mosquitto.log",
    ).start()
    password = {u: f"secret-{v.lower()}" for u, v in clients.items()}
    try:
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client("127.0.0.1", port, identifier="anon", timeout=WAIT_S):
                pass
        exporter = services["mosquitto-exporter"]["environment"]["MQTT_USER"]
        async with aiomqtt.Client(
            "127.0.0.1", port, username=exporter, password=password[exporter], timeout=WAIT_S
        ) as sys_reader:
            await sys_reader.subscribe("$SYS/broker/uptime")
            async with asyncio.timeout(WAIT_S):
                await anext(aiter(sys_reader.messages))
        device = DeviceRecord(device_id="ordos/kangbashi/pic-07", kind="city")
        admin_var = _var(init["environment"]["GHGWATCH_REGISTRY__ADMIN_PASSWORD"])
        admin_pw = f"secret-{admin_var.lower()}"
        async with DynsecClient(
            f"mqtt://127.0.0.1:{port}", reg.admin_username, admin_pw, "ghg/v1"
        ) as admin:
            await admin.add_device(device, "device-pw")
        for user in reg.bridge_users:
            async with aiomqtt.Client(
                "127.0.0.1", port, username=user, password=password[user],
                identifier=user, protocol=aiomqtt.ProtocolVersion.V5, timeout=WAIT_S,
            ) as bridge:  # fmt: skip
                await bridge.subscribe("ghg/v1/#", qos=1)
                async with aiomqtt.Client(
                    "127.0.0.1", port, username=device.mqtt_username, password="device-pw",
                    identifier="x", protocol=aiomqtt.ProtocolVersion.V5, timeout=WAIT_S,
                ) as dev:  # fmt: skip
                    await dev.publish(device.data_topic("ghg/v1"), user.encode(), qos=1)
                async with asyncio.timeout(WAIT_S):
                    got = await anext(aiter(bridge.messages))
                assert got.payload == user.encode()
    finally:
        await broker.stop()
    before = dynsec.read_text()
    again = subprocess.run(argv, check=False, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert dynsec.read_text() == before
