"""deploy/mosquitto/mosquitto-dynsec.conf as shipped: plugin, TLS on its own listener, no
anonymous clients, client ids bound to usernames."""

from __future__ import annotations

import asyncio
import json
import secrets
import ssl
from pathlib import Path

import aiomqtt
import pytest
from registry_helpers import ADMIN_USER, BRIDGE_USER, ROOT, needs_dynsec, start_broker

from adapters.ports import free_port
from registry.acl import BRIDGE_ROLE
from registry.brokerconf import find_dynsec_plugin
from registry.certs import make_dev_ca, make_server_cert
from registry.dynsec import DynsecClient, initial_config
from registry.models import DeviceRecord

pytestmark = [
    needs_dynsec,
    # paho leaves its TLS socket to the garbage collector after a disconnect
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]

WAIT_S = 10.0
DEVICE = DeviceRecord(device_id="ordos/kangbashi/pic-07", kind="city")


async def test_shipped_dynsec_config(repo_root: Path, tmp_path: Path) -> None:
    port, tls_port = free_port(0), free_port(0)
    tls = tmp_path / "tls"
    make_server_cert(make_dev_ca(tls), tls, ["localhost"])
    text = (repo_root / "deploy" / "mosquitto" / "mosquitto-dynsec.conf").read_text()
    for old, new in {
        "listener 1883 0.0.0.0": f"listener {port} 127.0.0.1",
        "listener 8883 0.0.0.0": f"listener {tls_port} 127.0.0.1",
        "/mosquitto/config/tls/": f"{tls}/",
        "/usr/lib/mosquitto_dynamic_security.so": str(find_dynsec_plugin()),
        "/mosquitto/data/": f"{tmp_path}/",
    }.items():
        assert old in text
        text = text.replace(old, new)
    pw = {u: secrets.token_urlsafe(12) for u in (ADMIN_USER, BRIDGE_USER)}
    config = initial_config(
        admin=(ADMIN_USER, pw[ADMIN_USER]), root=ROOT, alerts_root=f"{ROOT}/alerts",
        clients=[(BRIDGE_USER, pw[BRIDGE_USER], BRIDGE_ROLE)],
    )  # fmt: skip
    (tmp_path / "dynamic-security.json").write_text(json.dumps(config))
    broker = await start_broker(tmp_path, text + "\nuser root\n", port)
    try:
        async with DynsecClient(f"mqtt://127.0.0.1:{port}", ADMIN_USER, pw[ADMIN_USER], ROOT) as d:
            await d.add_device(DEVICE, "pw-dev")
        trust = ssl.create_default_context(cafile=str(tls / "ca.crt"))
        for p, ctx in ((port, None), (tls_port, trust)):
            with pytest.raises(aiomqtt.MqttError):
                async with aiomqtt.Client(
                    "localhost", p, identifier="anon", tls_context=ctx, timeout=WAIT_S
                ):
                    pass
        async with aiomqtt.Client(
            "127.0.0.1", port, username=BRIDGE_USER, password=pw[BRIDGE_USER],
            identifier="bridge-id", protocol=aiomqtt.ProtocolVersion.V5, timeout=WAIT_S,
        ) as bridge:  # fmt: skip
            await bridge.subscribe(f"{ROOT}/#", qos=1)
            # the device on either listener, claiming the bridge's client id: the broker
            # replaces it with the device's username, so the bridge's session is not taken
            # over (use_username_as_clientid is a per-listener option: both need it)
            for p, ctx in ((port, None), (tls_port, trust)):
                async with aiomqtt.Client(
                    "localhost", p, username=DEVICE.mqtt_username, password="pw-dev",
                    identifier="bridge-id", tls_context=ctx, timeout=WAIT_S,
                    protocol=aiomqtt.ProtocolVersion.V5,
                ) as device:  # fmt: skip
                    await device.publish(DEVICE.data_topic(ROOT), f"via {p}".encode(), qos=1)
                async with asyncio.timeout(WAIT_S):
                    got = await anext(aiter(bridge.messages))
                assert str(got.topic) == DEVICE.data_topic(ROOT)
                assert got.payload == f"via {p}".encode()
    finally:
        await broker.stop()
