"""The optimization benchmark (bench/sections/optimize.py) at a tiny size: it runs the
product's pure functions over a population whose truth is known. Structure and the
direction of the figures only; the bars are checked at full size by `make bench`."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench.core import Context
from bench.sections import SECTIONS, load
from bench.sections.optimize import bandit_run, best_hour_population


def test_best_hour_sends_beat_sending_at_once_for_customers_with_history() -> None:
    result = best_hour_population(300, seed=3)
    total = result.rich[1] + result.some[1] + result.none[1]
    assert total == result.baseline[1] == 300
    assert result.share(result.rich) > 0.8 > result.share(result.baseline)


def test_the_learning_split_moves_traffic_to_the_better_case() -> None:
    run = bandit_run(3000, seed=5, rates=(0.02, 0.2))
    assert run.better_share_last_half > 0.9
    assert 0 <= run.regret < run.fixed_regret


def test_the_section_runs_and_reports_both_tables(tmp_path: Path) -> None:
    assert "optimize" in SECTIONS
    section = load("optimize")
    ctx = Context(quick=True, workdir=tmp_path)
    tables = asyncio.run(section.run(ctx))
    assert [t.title.split(",")[0] for t in tables] == ["Best-hour sends", "Learning split"]
    assert any("80%" in note for note in tables[0].notes)
    assert any("regret" in row.metric for row in tables[1].rows)
