"""The one settings object: environment, TOML file, precedence, secrets hidden, frozen."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from core.settings import AlertsSettings, MqttSettings, NotifierTarget, Settings, load_settings


def test_environment_variables_use_the_prefix_and_double_underscore_nesting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GHGWATCH_KAFKA__BOOTSTRAP sets kafka.bootstrap; values are parsed to their types."""
    monkeypatch.setenv("GHGWATCH_KAFKA__BOOTSTRAP", "k1:9092,k2:9092")
    monkeypatch.setenv("GHGWATCH_KAFKA__PARTITIONS", "12")
    monkeypatch.setenv("GHGWATCH_METRICS__ENABLED", "false")
    monkeypatch.setenv("GHGWATCH_DATA_DIR", "/var/lib/ghgwatch")
    s = Settings()
    assert s.kafka.bootstrap == "k1:9092,k2:9092"
    assert s.kafka_bootstrap() == "k1:9092,k2:9092"
    assert s.kafka.partitions == 12
    assert s.metrics.enabled is False
    assert s.data_dir == Path("/var/lib/ghgwatch")


def test_variables_without_the_prefix_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """KAFKA__BOOTSTRAP (no prefix) does not configure ghgwatch."""
    monkeypatch.setenv("KAFKA__BOOTSTRAP", "elsewhere:9092")
    assert Settings().kafka.bootstrap is None


def test_toml_file_sets_nested_sections(tmp_path: Path) -> None:
    """A TOML file with the same nesting configures every section."""
    conf = tmp_path / "ghgwatch.toml"
    conf.write_text(
        '[mqtt]\nurl = "mqtt://broker:1883"\nqos = 0\n'
        '[db]\nurl = "postgresql://u:pw@db:5432/ghgwatch"\n'
        "[processor]\nbatch_max = 500\n"
    )
    s = load_settings(conf)
    assert s.mqtt_url() == "mqtt://broker:1883"
    assert s.mqtt.qos == 0
    assert s.db_url() == "postgresql://u:pw@db:5432/ghgwatch"
    assert s.processor.batch_max == 500


def test_keyword_arguments_beat_environment_which_beats_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Precedence: overrides > GHGWATCH_* environment > TOML file > defaults."""
    conf = tmp_path / "ghgwatch.toml"
    conf.write_text('data_dir = "/from/file"\n[kafka]\nbootstrap = "file:9092"\nlinger_ms = 9\n')
    monkeypatch.setenv("GHGWATCH_KAFKA__BOOTSTRAP", "env:9092")
    monkeypatch.setenv("GHGWATCH_DATA_DIR", "/from/env")
    s = load_settings(conf)
    assert s.kafka.bootstrap == "env:9092"
    assert s.kafka.linger_ms == 9  # only the file sets it
    assert s.kafka.replication_factor == 1  # default
    assert s.data_dir == Path("/from/env")
    assert load_settings(conf, data_dir=Path("/from/cli")).data_dir == Path("/from/cli")


def test_a_file_is_read_only_when_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings() never reads a TOML file by surprise, even after load_settings used one."""
    conf = tmp_path / "ghgwatch.toml"
    conf.write_text('[kafka]\nbootstrap = "file:9092"\n')
    monkeypatch.chdir(tmp_path)
    assert load_settings(conf).kafka.bootstrap == "file:9092"
    assert Settings().kafka.bootstrap is None


def test_secrets_are_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Passwords (MQTT, database URL, Kafka SASL) stay out of repr, str and JSON dumps."""
    monkeypatch.setenv("GHGWATCH_MQTT__PASSWORD", "mqtt-hunter2")
    monkeypatch.setenv("GHGWATCH_DB__URL", "postgresql://u:db-hunter2@db/ghgwatch")
    monkeypatch.setenv("GHGWATCH_KAFKA__SASL_PASSWORD", "sasl-hunter2")
    s = Settings()
    assert isinstance(s.mqtt.password, SecretStr)
    for text in (repr(s), str(s), s.model_dump_json()):
        assert "hunter2" not in text
    assert s.mqtt.password.get_secret_value() == "mqtt-hunter2"
    assert "db-hunter2" in s.db_url()


def test_settings_are_frozen_and_reject_unknown_keys() -> None:
    """Assigning a field fails, sections too; a misspelt key is an error, not ignored."""
    s = Settings()
    with pytest.raises(ValidationError):
        s.data_dir = Path("/elsewhere")  # type: ignore[misc]
    with pytest.raises(ValidationError):
        s.kafka.partitions = 1  # type: ignore[misc]
    with pytest.raises(ValidationError):
        Settings(kafka={"bootstrapp": "x:9092"})  # type: ignore[arg-type]


def test_misspelt_environment_section_key_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """GHGWATCH_KAFKA__BOOTSTRAPP fails loudly instead of silently using the default."""
    monkeypatch.setenv("GHGWATCH_KAFKA__BOOTSTRAPP", "x:9092")
    with pytest.raises(ValidationError):
        Settings()


def test_with_endpoints_fills_only_unset_urls() -> None:
    """Configured URLs win; with_endpoints only fills the ones left to `ghgwatch up`."""
    s = Settings(mqtt={"url": "mqtt://real:1883"})  # type: ignore[arg-type]
    filled = s.with_endpoints(
        mqtt_url="mqtt://embedded:1", kafka_bootstrap="embedded:2", db_url="postgresql://e/3"
    )
    assert filled.mqtt_url() == "mqtt://real:1883"
    assert filled.kafka_bootstrap() == "embedded:2"
    assert filled.db_url() == "postgresql://e/3"
    assert s.kafka.bootstrap is None  # the original is untouched


_BAD_TOPIC_ROOTS = [
    ("", "empty"),
    ("ghg/+/v1", "wildcard"),
    ("ghg/#", "wildcard"),
    ("/ghg/v1", "'/'"),
    ("ghg/v1/", "'/'"),
    ("ghg//v1", "empty level"),
    ("ghg/v 1", "whitespace"),
    ("ghg/v1\n", "whitespace"),
    ("ghg/\x00v1", "NUL"),
]


@pytest.mark.parametrize(("root", "why"), _BAD_TOPIC_ROOTS)
def test_topic_roots_that_cannot_prefix_a_topic_are_refused(root: str, why: str) -> None:
    """Every MQTT topic-root setting refuses what would make topics no broker matches or a
    subscription that matches everything, and says why."""
    for build in (
        lambda: MqttSettings(topic_root=root),
        lambda: AlertsSettings(mqtt_topic_root=root),
        lambda: NotifierTarget(name="siren", type="mqtt", topic=root),
    ):
        with pytest.raises(ValidationError, match="topic root") as err:
            build()
        assert why in str(err.value)


def test_topic_root_from_the_environment_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """GHGWATCH_MQTT__TOPIC_ROOT=ghg/# fails at start-up, not as a subscription to all."""
    monkeypatch.setenv("GHGWATCH_MQTT__TOPIC_ROOT", "ghg/#")
    with pytest.raises(ValidationError, match=r"mqtt\.topic_root"):
        Settings()


def test_good_topic_roots_are_kept_as_given() -> None:
    """Ordinary roots, one level or many, pass unchanged; an unset notifier topic stays None."""
    assert MqttSettings(topic_root="ghg").topic_root == "ghg"
    assert MqttSettings().topic_root == "ghg/v1"
    assert AlertsSettings(mqtt_topic_root="site-a/ghg/v1/alerts").mqtt_topic_root == (
        "site-a/ghg/v1/alerts"
    )
    assert NotifierTarget(name="siren", type="mqtt").topic is None
