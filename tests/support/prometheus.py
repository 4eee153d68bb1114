"""Reading a DataPulse ``/metrics`` exposition with prometheus-client's own text parser."""

from __future__ import annotations

import httpx2
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
"""Every sample of one scrape: (sample name, its labels) -> value."""


async def scrape(client: httpx2.AsyncClient) -> Samples:
    """GET /metrics (asserting a 200 in the text format) and parse every sample."""
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample ``name`` with exactly ``labels``; 0.0 when absent."""
    return samples.get((name, frozenset(labels.items())), 0.0)
