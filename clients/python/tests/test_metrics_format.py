"""The metrics text parses with Prometheus' own Python parser: no two families collide (a gauge
``x`` beside a counter ``x_total`` would), and the families the README lists are there."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from service import Service

PREFIX = "keycloak_resilient_"


def families(text: str) -> "dict[str, str]":
    seen: "dict[str, str]" = {}
    for family in text_string_to_metric_families(text):
        assert family.name not in seen, f"family {family.name} appears twice"
        seen[family.name] = family.type
    return seen


def test_metrics_parse_as_distinct_families(service: Service) -> None:
    service.cli("login", "--user", "alice", "--package", "webapp", stdin="Alice-Password-1\n")
    text = service.cli("metrics").stdout
    found = families(text)
    expected = {
        "keycloak_available": "gauge",
        "sync_items": "gauge",
        "sync_oldest_pending_age_seconds": "gauge",
        "sync_last_success_timestamp_seconds": "gauge",
        "sync_failed": "counter",  # the parser names a counter's family without `_total`
        "keycloak_calls_rejected": "counter",
        "keycloak_call_duration_seconds": "histogram",
        "logins": "counter",
    }
    for name, kind in expected.items():
        assert found.get(PREFIX + name) == kind, (name, found)
    # The login above asked Keycloak: the histogram counted at least that call.
    for family in text_string_to_metric_families(text):
        if family.name == PREFIX + "keycloak_call_duration_seconds":
            count = [s.value for s in family.samples if s.name.endswith("_count")]
            assert count and count[0] >= 1, family.samples


def test_a_textfile_parses_too(service: Service, tmp_path: Path) -> None:
    path = tmp_path / "kr.prom"
    service.cli("metrics", "--textfile", str(path))
    families(path.read_text())
