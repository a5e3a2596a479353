"""Bridge validation benchmark: validate_messages against the per-message model path.

Both sides turn MQTT payloads into Kafka values with the same verdicts:

- ghgwatch: ``validate_messages`` over a receive pass (lean parse, timestamps and checks over
  the whole pass, values encoded straight to format-2 bytes);
- baseline: each message alone through the full pydantic models of ``wire.schemas``, a
  Python check per reading, and the format-1 JSON record (how the bridge worked before).

Two loads: gateway batches of 100 readings (passes of 50 messages) and single-reading
messages (passes of 1, 8 and 200 messages), timed in this process, no I/O.

    python benchmarks/bench_validate.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from wire import (
    MAX_FUTURE_SKEW,
    METRICS,
    BatchPayload,
    ReadingRecord,
    SinglePayload,
    WireReading,
    parse_data_topic,
    validate_messages,
)

ROOT = "ghg/v1"
Message = tuple[str, bytes, datetime]


def _baseline(messages: list[Message]) -> list[bytes | None]:
    """The per-message path: full models, a Python check per reading, a JSON record."""
    out: list[bytes | None] = []
    for topic, payload, received_at in messages:
        device = parse_data_topic(topic, ROOT)
        assert device is not None
        parsed: SinglePayload | BatchPayload
        if b'"readings"' in payload:
            parsed = BatchPayload.model_validate_json(payload)
            items = [(r.ts or parsed.ts, r.metric, r.value, r.flag or parsed.flag)
                     for r in parsed.readings]  # fmt: skip
        else:
            parsed = SinglePayload.model_validate_json(payload)
            items = [(parsed.ts, parsed.metric, parsed.value, parsed.flag)]
        ok = True
        readings = []
        for ts, metric, value, flag in items:
            spec = METRICS.get(metric)
            if (
                spec is None
                or device.kind not in spec.kinds
                or not math.isfinite(value)
                or not spec.min_value <= value <= spec.max_value
                or ts > received_at + MAX_FUTURE_SKEW  # type: ignore[operator]
            ):
                ok = False
                break
            readings.append(WireReading(ts=ts, metric=metric, value=value, flag=flag))  # type: ignore[arg-type]
        if not ok:
            out.append(None)
            continue
        record = ReadingRecord(
            device_id=device.device_id, kind=device.kind, network=device.network,
            site=device.site, device=device.device, location=parsed.location,
            mqtt_topic=topic, received_at=received_at, readings=readings,
        )  # fmt: skip
        out.append(record.model_dump_json().encode())
    return out


def _ghgwatch(messages: list[Message]) -> list[bytes | None]:
    return [getattr(v, "value", None) for v in validate_messages(messages, root=ROOT)]


def _gateway_messages(n: int, now: datetime) -> list[Message]:
    out = []
    for i in range(n):
        t0 = now - timedelta(seconds=2 + i % 50)
        items = ",".join(
            f'{{"ts":"{(t0 + timedelta(milliseconds=10 * s)).isoformat()}",'
            f'"metric":"ch4_pct_vol","value":{0.3 + s / 1000:.3f}}}'
            for s in range(100)
        )
        topic = f"{ROOT}/mine/ordos-coal/buertai/t1-{i % 500:04d}/data"
        payload = f'{{"flag":"N","location":"T1","readings":[{items}]}}'.encode()
        out.append((topic, payload, now))
    return out


def _single_messages(n: int, now: datetime) -> list[Message]:
    return [
        (
            f"{ROOT}/city/baotou/kundulun/pic-{i % 500:03d}/data",
            json.dumps(
                {
                    "ts": (now - timedelta(seconds=i)).isoformat(),
                    "metric": "co2_ppm",
                    "value": 420.5 + i % 7,
                    "flag": "N",
                }
            ).encode(),
            now,
        )
        for i in range(n)
    ]


def _rate(fn: Callable[[list[Message]], list[bytes | None]], messages: list[Message],
          pass_size: int, seconds: float) -> float:  # fmt: skip
    """Messages per second through ``fn`` in passes of ``pass_size``."""
    done, t_end = 0, time.perf_counter() + seconds
    t0 = time.perf_counter()
    while time.perf_counter() < t_end:
        for k in range(0, len(messages), pass_size):
            out = fn(messages[k : k + pass_size])
            assert all(v is not None for v in out)
            done += len(out)
    return done / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    args = p.parse_args()
    now = datetime.now(UTC)
    loads = [
        ("gateway, 100 readings/msg", _gateway_messages(200, now), 50, 100),
        ("single reading/msg", _single_messages(400, now), 1, 1),
        ("single reading/msg", _single_messages(400, now), 8, 1),
        ("single reading/msg", _single_messages(400, now), 200, 1),
    ]
    print(f"{'load':<28} {'pass':>5} {'ghgwatch rdg/s':>15} {'baseline rdg/s':>15} {'ratio':>6}")
    for name, messages, pass_size, per_msg in loads:
        ours = _rate(_ghgwatch, messages, pass_size, args.seconds) * per_msg
        base = _rate(_baseline, messages, pass_size, args.seconds) * per_msg
        print(f"{name:<28} {pass_size:>5} {ours:>15,.0f} {base:>15,.0f} {ours / base:>5.1f}x")


if __name__ == "__main__":
    main()
