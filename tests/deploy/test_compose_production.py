"""The production compose stack, checked statically (no Docker engine runs here).

Health checks everywhere, pinned images, one mounted settings file whose ports agree with the
health checks, the published ports and Prometheus' scrape targets, two bridges in one
shared-subscription group, two processors in one consumer group, TLS on the broker, and a
Grafana URL the alert service can reach inside the compose network.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from core.settings import Settings, load_settings

_SUBST = re.compile(r"\$\{(\w+)(?::?[-?][^}]*)?\}")
_GHGWATCH_SERVICES = {
    "migrate",
    "bridge",
    "bridge-2",
    "processor",
    "processor-2",
    "detector",
    "alert-service",
    "api",
    "hj212",
    "broker-init",
    "stations",
}
# migrate and broker-init run once per start; stations is a tool (`docker compose run`)
_ONE_SHOT = {"migrate", "broker-init", "stations"}


def _substitute(match: re.Match[str]) -> str:
    name, default = match.group(1), match.group(0).partition(":-")[2].rstrip("}")
    if default:
        return default
    return '{"duty": "secret"}' if name.endswith("API_TOKENS") else f"secret-{name.lower()}"


@pytest.fixture
def compose(repo_root: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((repo_root / "deploy" / "compose.yaml").read_text())
    return data


def _mount_target(svc: dict[str, Any], source: str) -> str | None:
    for volume in svc.get("volumes", []):
        src, _, rest = volume.partition(":")
        if src == source:
            return rest.split(":", 1)[0]
    return None


def _settings_of(repo_root: Path, svc: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a ghgwatch container gets: the mounted TOML under its environment."""
    target = _mount_target(svc, "./ghgwatch/ghgwatch.toml")
    assert target is not None
    env = {k: _SUBST.sub(_substitute, str(v)) for k, v in svc["environment"].items()}
    assert env["GHGWATCH_CONFIG"] == target
    for key in list(os.environ):
        if key.startswith("GHGWATCH_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("GHGWATCH_") and key != "GHGWATCH_CONFIG":
            monkeypatch.setenv(key, value)
    return load_settings(repo_root / "deploy" / "ghgwatch" / "ghgwatch.toml")


def test_every_long_running_service_has_a_health_check(compose: dict[str, Any]) -> None:
    """Each service but the one-shot migration has a health check with a command; the
    migration is awaited by exit status instead."""
    services = compose["services"]
    for name, svc in services.items():
        if name in _ONE_SHOT:
            assert svc["restart"] == "no"
            continue
        check = svc.get("healthcheck")
        assert check, f"{name} has no health check"
        assert check.get("test"), f"{name} has no health check command"
        assert check["test"][0] in {"CMD", "CMD-SHELL"}, name
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            want = "service_completed_successfully" if dep in _ONE_SHOT else "service_healthy"
            assert cond["condition"] == want, (name, dep)


def test_images_are_pinned(compose: dict[str, Any], repo_root: Path) -> None:
    """No image floats: each has an explicit version tag (ours: the package version)."""
    version = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]["version"]
    for name, svc in compose["services"].items():
        image = svc["image"]
        repo, _, tag = image.rpartition(":")
        assert repo, (name, image)
        assert tag not in {"", "latest"}, (name, image)
        assert re.search(r"\d", tag), (name, image)
        if name in _GHGWATCH_SERVICES:
            assert image == f"ghgwatch:{version}", name


def test_one_settings_file_is_mounted_in_every_ghgwatch_service(
    compose: dict[str, Any], repo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every ghgwatch container reads deploy/ghgwatch/ghgwatch.toml; with the compose
    environment it gives valid settings pointing at the compose services, no secret shown."""
    services = compose["services"]
    assert {n for n, s in services.items() if s["image"].startswith("ghgwatch:")} == (
        _GHGWATCH_SERVICES
    )
    for name in _GHGWATCH_SERVICES:
        settings = _settings_of(repo_root, services[name], monkeypatch)
        assert settings.kafka_bootstrap() == "kafka:9092", name
        assert settings.mqtt_url() == "mqtt://mosquitto:1883", name
        assert urlsplit(settings.db_url()).hostname == "timescaledb", name
        assert settings.metrics.host == "0.0.0.0", name
        assert "secret-" not in repr(settings), name


def _health_port(svc: dict[str, Any]) -> int:
    text = " ".join(svc["healthcheck"]["test"])
    m = re.search(r"http://127\.0\.0\.1:(\d+)/", text)
    assert m, text
    return int(m.group(1))


def test_ports_agree_between_settings_health_checks_prometheus_and_published_ports(
    compose: dict[str, Any], repo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each service's health check probes the port its settings give it; Prometheus scrapes
    exactly the metrics endpoints the ghgwatch containers serve; the API is published on
    alerts.api_port."""
    services = compose["services"]
    field = {
        "bridge": "bridge_port",
        "bridge-2": "bridge_port",
        "processor": "processor_port",
        "processor-2": "processor_port",
        "detector": "detector_port",
        "alert-service": "alerts_port",
    }
    expected_targets = set()
    for name, port_field in field.items():
        settings = _settings_of(repo_root, services[name], monkeypatch)
        port = getattr(settings.metrics, port_field)
        assert _health_port(services[name]) == port, name
        expected_targets.add(f"{name}:{port}")
    gateway = _settings_of(repo_root, services["hj212"], monkeypatch).gateway
    assert _health_port(services["hj212"]) == gateway.metrics_port
    expected_targets.add(f"hj212:{gateway.metrics_port}")
    assert f"{gateway.port}:{gateway.port}" in services["hj212"]["ports"]
    api = _settings_of(repo_root, services["api"], monkeypatch)
    assert _health_port(services["api"]) == api.alerts.api_port
    assert api.alerts.api_host == "0.0.0.0"
    assert f"{api.alerts.api_port}:{api.alerts.api_port}" in services["api"]["ports"]

    prom = yaml.safe_load((repo_root / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {
        t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    }
    ghgwatch_targets = {t for t in targets if t.split(":")[0] in _GHGWATCH_SERVICES}
    assert ghgwatch_targets == expected_targets
    for target in targets:
        assert target.split(":")[0] in services, target


def test_two_bridges_share_one_subscription_group_with_their_own_logins(
    compose: dict[str, Any], repo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both bridges subscribe in the same shared group, under distinct client ids and broker
    users, each of which the ACL example grants the bridge's rights; both processors are in
    one consumer group."""
    services = compose["services"]
    one = _settings_of(repo_root, services["bridge"], monkeypatch)
    two = _settings_of(repo_root, services["bridge-2"], monkeypatch)
    assert one.mqtt.share_group
    assert one.mqtt.share_group == two.mqtt.share_group
    assert one.mqtt.client_id != two.mqtt.client_id
    assert {one.mqtt.username, two.mqtt.username} == {one.mqtt.client_id, two.mqtt.client_id}
    assert one.mqtt.password != two.mqtt.password
    acl = (repo_root / "deploy" / "mosquitto" / "acl.example").read_text()
    for user in (one.mqtt.username, two.mqtt.username):
        assert re.search(
            rf"^user {re.escape(str(user))}\ntopic read ghg/v1/\+/\+/\+/\+/data$", acl, re.M
        )
    p1 = _settings_of(repo_root, services["processor"], monkeypatch)
    p2 = _settings_of(repo_root, services["processor-2"], monkeypatch)
    assert p1.processor.group_id == p2.processor.group_id
    assert services["processor"]["command"] == services["processor-2"]["command"] == ["processor"]


def test_broker_has_auth_and_a_tls_port_and_grafana_is_reachable_by_the_alert_service(
    compose: dict[str, Any], repo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mosquitto runs the shipped dynamic-security config with its certificates where that
    config reads them and publishes 8883; the alert service's Grafana URL names the grafana
    service on its container port."""
    mqtt = compose["services"]["mosquitto"]
    assert _mount_target(mqtt, "./mosquitto/mosquitto-dynsec.conf") == (
        "/mosquitto/config/mosquitto.conf"
    )
    assert _mount_target(mqtt, "./certs/mosquitto") == "/mosquitto/config/tls"
    assert "8883:8883" in mqtt["ports"]
    assert (repo_root / "deploy" / "certs" / "mosquitto").is_dir()
    alerts = _settings_of(repo_root, compose["services"]["alert-service"], monkeypatch)
    assert alerts.alerts.grafana_url is not None
    url = urlsplit(alerts.alerts.grafana_url)
    assert url.hostname == "grafana"
    assert url.port == 3000
    grafana = compose["services"]["grafana"]
    assert any(p.endswith(":3000") for p in grafana["ports"])
    assert (
        "ghgwatch-region.json"
        in grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    )
    assert compose["services"]["alert-service"]["depends_on"]["grafana"]["condition"] == (
        "service_healthy"
    )


def test_the_hj212_gateway_is_a_service_like_the_bridge(
    compose: dict[str, Any], repo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11: `ghgwatch hj212` runs as its own container: the same image and settings
    file, listening on gateway.port (published for the loggers in the field), restarted
    and stopped like the others, started once Kafka and the schema are there."""
    services = compose["services"]
    hj212, bridge = services["hj212"], services["bridge"]
    assert hj212["command"] == ["hj212"]
    for key in ("image", "restart", "stop_grace_period", "volumes"):
        assert hj212[key] == bridge[key] or (
            key == "volumes" and set(bridge[key]) <= set(hj212[key])
        ), key
    deps = hj212["depends_on"]
    assert deps["kafka"]["condition"] == "service_healthy"
    assert deps["migrate"]["condition"] == "service_completed_successfully"
    assert hj212["healthcheck"]["interval"] == bridge["healthcheck"]["interval"]
    gateway = _settings_of(repo_root, hj212, monkeypatch).gateway
    assert gateway.port == 9212
    assert gateway.host == "0.0.0.0"
    assert not gateway.loggers  # MN and PW from the device registry (`stations add --hj212-mn`)
    dockerfile = (repo_root / "deploy" / "Dockerfile").read_text()
    [expose] = re.findall(r"^EXPOSE (.*)$", dockerfile, re.M)
    assert {str(gateway.port), str(gateway.metrics_port)} <= set(expose.split())
