"""The burst reader stops at the session's buffer ceiling, however busy the client is.

paho's own ``loop_read`` handles as many packets per call as the client has publishes of its
own awaiting PUBACK. The bridge publishes a status reply per rejected message, so under a reject
flood hundreds are outstanding, and one paho read took hundreds of PUBLISH packets past the
full check: the 1,000,000-message fuzz run logged "mqtt buffer full; message not taken" and lost
10,343 broker-acknowledged messages, never redelivered because the connection stayed up.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import aiomqtt

from ingest.mqtt import _BurstReader


def _publish_v311(topic: str, mid: int, payload: bytes) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic.encode() + mid.to_bytes(2, "big") + payload
    length, encoded = len(body), b""
    while True:
        byte, length = length % 128, length // 128
        encoded += bytes([byte | (0x80 if length else 0)])
        if not length:
            break
    return bytes([0x32]) + encoded + body  # PUBLISH, QoS 1


async def test_reading_pauses_at_the_ceiling_with_many_own_publishes_outstanding() -> None:
    loop = asyncio.get_running_loop()
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    client = aiomqtt.Client("127.0.0.1", 1, protocol=aiomqtt.ProtocolVersion.V311)
    raw = client._client
    raw._sock = ours
    # 500 status replies of the bridge still waiting for their PUBACK.
    raw._out_messages = {mid: object() for mid in range(1, 501)}  # type: ignore[misc]
    cap = 40
    taken: list[bytes] = []
    reader = _BurstReader(
        client,
        loop,
        lambda: len(taken) >= cap,
        lambda _t, payload, _q, _m, _d: taken.append(payload),
        has_properties=False,
    )
    broker.sendall(b"".join(_publish_v311("ghg/a/b/c", i + 1, b"{}") for i in range(300)))
    await asyncio.sleep(0.05)
    try:
        reader.loop_read()
        assert len(taken) == cap, "the reader read past the buffer's ceiling"
        assert reader.paused
        taken.clear()
        reader.resume()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if reader.paused:
                break
        assert len(taken) == cap
    finally:
        with contextlib.suppress(Exception):
            loop.remove_reader(ours.fileno())
        raw._sock = None
        ours.close()
        broker.close()
