"""deploy/mosquitto/mosquitto.conf made runnable in a temp dir: the same file, with its ports,
paths and TLS files moved there (development certificates made for the run)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from adapters.ports import free_port
from registry.certs import make_dev_ca, make_server_cert


@dataclass(frozen=True)
class ShippedConf:
    path: Path
    port: int
    tls_port: int
    ca: Path


def shipped_mosquitto_conf(repo_root: Path, tmp_path: Path) -> ShippedConf:
    """Write the shipped broker config for ``tmp_path``; every ``/mosquitto/`` path moved."""
    port, tls_port = free_port(0), free_port(0)
    ca = make_dev_ca(tmp_path / "certs")
    make_server_cert(ca, tmp_path / "certs", ["localhost", "127.0.0.1"])
    text = (repo_root / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    text = text.replace("listener 1883 0.0.0.0", f"listener {port} 127.0.0.1")
    text = text.replace("listener 8883 0.0.0.0", f"listener {tls_port} 127.0.0.1")
    text = text.replace("/mosquitto/config/mosquitto.passwd", str(tmp_path / "passwd"))
    text = text.replace("/mosquitto/config/acl", str(tmp_path / "acl"))
    text = text.replace("/mosquitto/certs/", f"{tmp_path / 'certs'}/")
    text = text.replace("/mosquitto/data/", f"{tmp_path}/")
    assert not any("/mosquitto/" in x for x in text.splitlines() if not x.startswith("#"))
    path = tmp_path / "mosquitto.conf"
    path.write_text(text + "\nuser root\n")
    return ShippedConf(path, port, tls_port, ca.cert)
