"""Reading a service's /metrics endpoint in tests (every service serves the same way)."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

HTTP_TIMEOUT_S = 5.0


def scrape(port: int) -> list[Sample]:
    """GET /metrics and parse every sample."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as resp:
        body: str = resp.read().decode()
    return [s for family in text_string_to_metric_families(body) for s in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float | None:
    """The value of the sample with this name and these labels, if scraped."""
    return next((s.value for s in samples if s.name == name and s.labels == labels), None)
