"""Generated hostile and broken MQTT messages, each traceable to its index after validation.

Every message ``i`` carries ``f{i}`` as its device segment (or, on a topic that breaks the
scheme, as a segment of it), so whatever the bridge makes of it — readings of device
``fz/s{n}/f{i}`` or a dead letter on a topic naming ``f{i}`` — can be matched back to it.
About half of the messages are valid; the rest are broken in one of the ways below, each a
thing a broken device, a careless integrator or an attacker sends.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

from wire.schemas import METRICS

__all__ = ["INDEX_RE", "Message", "messages"]

Message = tuple[str, bytes, str]  # topic, payload, what was done to it
INDEX_RE = re.compile(r"/f(\d+)(?:/|$|[^0-9])")

_KINDS = ("city", "cems", "mine", "leak")
_METRICS_BY_KIND = {
    kind: [name for name, spec in METRICS.items() if kind in {str(k) for k in spec.kinds}]
    for kind in _KINDS
}


def _ts(rng: random.Random, now: datetime) -> str:
    return (now - timedelta(seconds=rng.uniform(0, 3600))).isoformat()


def _reading(rng: random.Random, kind: str, now: datetime) -> dict[str, object]:
    metric = rng.choice(_METRICS_BY_KIND[kind])
    spec = METRICS[metric]
    item: dict[str, object] = {
        "ts": _ts(rng, now),
        "metric": metric,
        "value": round(rng.uniform(max(spec.min_value, 0.0), min(spec.max_value, 100.0)), 3),
    }
    if kind == "mine":
        item["location"] = rng.choice(["T0", "T1", "T2", "T3", "T7", "main_return"])
    return item


def _valid(rng: random.Random, kind: str, now: datetime) -> bytes:
    if rng.random() < 0.6:
        return json.dumps(_reading(rng, kind, now)).encode()
    items = [_reading(rng, kind, now) for _ in range(rng.randint(1, 20))]
    return json.dumps({"readings": items}).encode()


def _with(base: dict[str, object], **changes: object) -> bytes:
    return json.dumps(base | changes).encode()


def _payload_mutations(
    rng: random.Random, kind: str, now: datetime
) -> list[tuple[str, Callable[[], bytes]]]:
    one = _reading(rng, kind, now)
    raw = json.dumps(one).encode()
    return [
        ("truncated", lambda: raw[: rng.randint(0, len(raw) - 1)]),
        ("random bytes", lambda: rng.randbytes(rng.randint(1, 200))),
        ("invalid utf-8", lambda: raw[:5] + b"\xff\xfe\xc3" + raw[5:]),
        ("nul in key", lambda: raw[:-1] + b', "a\\u0000b": 1}'),
        ("nul in value", lambda: _with(one, metric="co2\x00ppm")),
        ("lone surrogate", lambda: raw[:-1] + b', "\\ud800": "\\udfff"}'),
        ("value as string", lambda: _with(one, value=str(one["value"]))),
        ("value true", lambda: _with(one, value=True)),
        ("value NaN", lambda: raw.replace(b'"value": ', b'"value": NaN, "v": ')),
        ("value 1e400", lambda: raw.replace(b'"value": ', b'"value": 1e400, "v": ')),
        ("huge integer", lambda: _with(one, value=10**40)),
        ("year 1", lambda: _with(one, ts="0001-01-01T00:00:00Z")),
        ("epoch 0", lambda: _with(one, ts=0)),
        ("epoch -1", lambda: _with(one, ts=-1)),
        ("far future", lambda: _with(one, ts="2999-01-01T00:00:00Z")),
        ("garbage ts", lambda: _with(one, ts="yesterday at noon")),
        ("naive ts", lambda: _with(one, ts="2026-11-25T08:00:05")),
        ("missing ts", lambda: json.dumps({k: v for k, v in one.items() if k != "ts"}).encode()),
        ("unknown metric", lambda: _with(one, metric="xyz_ppm")),
        (
            "metric of another kind",
            lambda: _with(one, metric="co2_pct_vol" if kind != "cems" else "co2_ppm"),
        ),
        ("extra field", lambda: _with(one, colour="red")),
        ("duplicate keys", lambda: raw[:-1] + b', "value": 2, "value": "x"}'),
        ("deep nesting", lambda: b'{"readings": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
        ("empty", lambda: b""),
        ("top-level array", lambda: b"[" + raw + b"]"),
        ("top-level number", lambda: b"42"),
        ("empty batch", lambda: b'{"readings": []}'),
        ("batch of strings", lambda: b'{"readings": ["a", "b"]}'),
        ("whitespace only", lambda: b" \n\t "),
    ]


def _rare_mutations(
    rng: random.Random, kind: str, now: datetime
) -> list[tuple[str, Callable[[], bytes]]]:
    one = _reading(rng, kind, now)
    return [
        ("300 KiB payload", lambda: _with(one, pad="x" * 300_000)),
        ("10,001 readings", lambda: json.dumps({"readings": [one] * 10_001}).encode()),
    ]


def _topic(rng: random.Random, root: str, kind: str, i: int) -> tuple[str, str]:
    """The message's topic; about one in ten breaks the scheme (still naming ``f{i}``)."""
    good = f"{root}/{kind}/fz/s{i % 97}/f{i}/data"
    r = rng.random()
    if r > 0.10:
        return good, ""
    broken = [
        (f"{root}/bogus/fz/s1/f{i}/data", "unknown kind"),
        (f"{root}/{kind}/FZ/s1/f{i}/data", "upper case"),
        (f"{root}/{kind}/fz/s1/f{i}/extra/data", "extra level"),
        (f"{root}/{kind}/fz/s1/f{i}/datax", "wrong channel"),
        # Not a newline or another control character: Mosquitto refuses those in a topic as a
        # malformed packet and disconnects the sender, so they never reach the bridge.
        (f"{root}/{kind}/fz/s 1/f{i}/data", "space in a segment"),
        (f"{root}/{kind}/fz/{'s' * 70}/f{i}/data", "segment too long"),
        (f"{root}/{kind}/fz/сайт/f{i}/data", "non-ascii segment"),
        (f"{root}/{kind}/fz//f{i}/data", "empty segment"),
    ]
    return rng.choice(broken)


def messages(root: str, count: int, seed: int = 1) -> Iterator[Message]:
    """``count`` messages under ``root``: about half valid, the rest broken one way each."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    for i in range(count):
        kind = rng.choice(_KINDS)
        topic, topic_note = _topic(rng, root, kind, i)
        r = rng.random()
        if r < 0.5:
            payload, note = _valid(rng, kind, now), "valid"
        elif r < 0.5005:
            note, make = rng.choice(_rare_mutations(rng, kind, now))
            payload = make()
        else:
            note, make = rng.choice(_payload_mutations(rng, kind, now))
            payload = make()
        yield topic, payload, f"{note}; {topic_note}" if topic_note else note
