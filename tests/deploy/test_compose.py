"""deploy/ is consistent: compose parses, its files exist, its env builds Settings, Mosquitto's
shipped config runs on the real broker binary."""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml
from shipped_conf import shipped_mosquitto_conf

from core.settings import Settings
from ghgwatch.embedded import ManagedProcess, mosquitto_binary

_SUBST = re.compile(r"\$\{(\w+)(?::?[-?][^}]*)?\}")


def _substitute(match: re.Match[str]) -> str:
    """What compose puts for ${VAR...}: a default as written, else a stand-in secret."""
    name, default = match.group(1), match.group(0).partition(":-")[2].rstrip("}")
    if default:
        return default
    return '{"duty": "secret"}' if name.endswith("API_TOKENS") else "secret"


def _compose(repo_root: Path) -> dict[str, Any]:
    return yaml.safe_load((repo_root / "deploy" / "compose.yaml").read_text())


def _conf_values(path: Path) -> dict[str, str]:
    out = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            out[key] = value.strip()
    return out


def test_compose_runs_kafka_in_kraft_mode_with_timescaledb_mosquitto_and_grafana(
    repo_root: Path,
) -> None:
    """The production compose file has the brokers, the database, Grafana and our services."""
    services = _compose(repo_root)["services"]
    assert {
        "kafka",
        "timescaledb",
        "mosquitto",
        "grafana",
        "bridge",
        "processor",
        "detector",
        "alert-service",
        "api",
        "hj212",
    } <= set(services)
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]
    assert "zookeeper" not in services
    assert services["timescaledb"]["image"].startswith("timescale/timescaledb:")
    assert services["migrate"]["command"] == ["db", "migrate"]
    for name in ("bridge", "processor", "detector", "alert-service", "api", "hj212"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"


def test_every_file_compose_mounts_or_builds_from_exists(repo_root: Path) -> None:
    """Bind mounts and the build context point at files that are in the repository.

    Secrets (the password file, the ACL) are created from their committed examples.
    """
    deploy = repo_root / "deploy"
    compose = _compose(repo_root)
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            src = volume.split(":", 1)[0]
            if not src.startswith("."):
                assert src in compose["volumes"], (name, src)
                continue
            path = (deploy / src).resolve()
            example = path.with_name(path.name + ".example")
            if path.name in {"mosquitto.passwd", "acl"}:
                assert example.exists(), example
            else:
                assert path.exists(), (name, path)
    dockerfile = deploy / "Dockerfile"
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            for src in line.split()[1:-1]:
                assert (repo_root / src).exists(), src


def test_service_environment_builds_valid_settings(
    repo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GHGWATCH_* variables compose gives every ghgwatch service are valid Settings."""
    services = _compose(repo_root)["services"]
    for name in ("bridge", "processor", "migrate", "detector", "alert-service", "api", "hj212"):
        env = services[name].get("environment", services["processor"]["environment"])
        for key, value in env.items():
            if key.startswith("GHGWATCH_"):
                monkeypatch.setenv(key, _SUBST.sub(_substitute, str(value)))
        settings = Settings()
        assert settings.kafka_bootstrap() == "kafka:9092"
        assert settings.mqtt_url() == "mqtt://mosquitto:1883"
        assert settings.db_url() == "postgresql://ghgwatch:secret@timescaledb:5432/ghgwatch"
        assert settings.metrics.host == "0.0.0.0"
        assert "secret" not in repr(settings)


def test_mosquitto_conf_sets_queue_limits_persistence_and_sys_deliberately(
    repo_root: Path,
) -> None:
    """The shipped config states every limit DOMAIN.md warns about instead of the defaults."""
    conf = _conf_values(repo_root / "deploy" / "mosquitto" / "mosquitto.conf")
    assert int(conf["max_queued_messages"]) >= 100_000
    assert int(conf["max_queued_bytes"]) > 0
    assert "max_inflight_messages" in conf
    assert conf["persistence"] == "true"
    assert int(conf["sys_interval"]) > 0
    assert conf["allow_anonymous"] == "false"


@pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")
async def test_shipped_mosquitto_conf_runs_and_refuses_anonymous_clients(
    repo_root: Path, tmp_path: Path
) -> None:
    """The real broker starts from deploy/mosquitto/mosquitto.conf (paths and ports moved to
    a temp dir), refuses anonymous clients, lets a password-file user publish, and serves
    the same over TLS (8883) with the certificates it is given."""
    binary = mosquitto_binary()
    assert binary is not None
    passwd_tool = shutil.which("mosquitto_passwd")
    if passwd_tool is None:
        pytest.skip("mosquitto_passwd is not installed")
    conf = shipped_mosquitto_conf(repo_root, tmp_path)
    port = conf.port
    shutil.copy(repo_root / "deploy" / "mosquitto" / "acl.example", tmp_path / "acl")
    (tmp_path / "passwd").touch()
    subprocess.run(
        [passwd_tool, "-b", str(tmp_path / "passwd"), "ghgwatch-bridge", "pw"], check=True
    )
    broker = await ManagedProcess(
        "mosquitto",
        [binary, "-c", str(conf.path)],
        "127.0.0.1",
        port,
        tmp_path / "mosquitto.log",
    ).start()
    try:
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client("127.0.0.1", port, identifier="anon"):
                pass
        async with aiomqtt.Client(
            "127.0.0.1", port, identifier="b", username="ghgwatch-bridge", password="pw"
        ) as client:
            await client.publish("ghg/v1/city/baotou/kundulun/picarro-01/status", b"x", qos=1)
        tls = ssl.create_default_context(cafile=str(conf.ca))
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client("127.0.0.1", conf.tls_port, identifier="a", tls_context=tls):
                pass
        async with aiomqtt.Client(
            "127.0.0.1",
            conf.tls_port,
            identifier="b",
            username="ghgwatch-bridge",
            password="pw",
            tls_context=tls,
        ) as client:
            await client.publish("ghg/v1/city/baotou/kundulun/picarro-01/status", b"y", qos=1)
    finally:
        await broker.stop()


def test_the_image_copies_every_package_the_wheel_ships(repo_root: Path) -> None:
    """The Dockerfile builds the wheel from COPYed folders: a package left out fails the build."""
    import tomllib

    project = tomllib.loads((repo_root / "pyproject.toml").read_text())
    packages = project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    dockerfile = (repo_root / "deploy" / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+) \1$", dockerfile, flags=re.MULTILINE))
    assert set(packages) <= copied, f"not copied: {sorted(set(packages) - copied)}"
