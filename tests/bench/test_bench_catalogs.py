"""bench/catalogs.py's lookup measurement runs and reports its figures (structure only:
no test asserts a timing)."""

from __future__ import annotations

from bench.catalogs import lookups


def test_the_lookup_benchmark_sends_both_journeys_and_reports_the_difference() -> None:
    found = lookups(items=300, sends=5, database=None)
    assert found["sends"] == 5
    assert set(found) >= {"plain_ms", "guarded_ms", "added_ms"}
    assert found["added_ms"] == found["guarded_ms"] - found["plain_ms"]
