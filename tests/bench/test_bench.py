"""The benchmarks (bench/): tables carry ratios, and results land in docs/benchmarks.md.

Structure and behavior only: the figures depend on the machine, so no test asserts
a timing.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench import report
from bench.__main__ import parse
from bench.core import Context, Row, Table, Target, percentile
from bench.sections import SECTIONS, load


def test_a_row_divides_ours_by_the_baseline_and_checks_the_target() -> None:
    faster = Row("events/s", 300.0, 600.0, target=Target(">=", 0.5))
    assert faster.ratio == pytest.approx(0.5)
    assert faster.met is True
    assert Row("events", 47.0, 27.0, target=Target("==", 1.0)).met is False
    assert Row("compile", 21.0, 20.0, target=Target("<=", 1.2)).met is True
    assert Row("only ours", 5.0).ratio is None
    assert Row("only ours", 5.0, target=Target(">=", 1)).met is None


def test_an_absolute_target_holds_our_figure_to_a_value_in_the_rows_unit() -> None:
    goal = Target("<=", 5, absolute=True)
    assert Row("per journey", 4.2, None, "ms", target=goal).met is True
    assert Row("per journey", 5.3, 5.0, "ms", target=goal).met is False  # not the ratio
    assert Row("per journey", math.nan, None, "ms", target=goal).met is None
    table = Table("Compile", ours="1,000 journeys", baseline="100 journeys")
    table.add("per journey", 5.33, None, "ms", target=goal, digits=2)
    assert "| per journey (ms) | 5.33 |  |  | <= 5 ms | **no** |" in table.markdown()
    assert str(Target("<=", 1.2)) == "<= 1.2x"


def test_the_machine_block_says_how_long_the_run_took() -> None:
    block = report.machine_block(
        {"CPU": "x"}, {}, "make bench", "2026-12-07 15:00 UTC", 754.4, [("scale", 215.2)]
    )
    assert "It took 754 s (12 min 34 s) in all: scale 215 s." in block
    assert "within make bench's 15 minutes" in block
    slow = report.machine_block({}, {}, "make bench", "now", 930.0, [])
    assert "It took 930 s (15 min 30 s) in all." in slow and "**over**" in slow
    assert "It took" not in report.machine_block({"CPU": "x"}, {}, "make bench", "now")


def test_percentiles_interpolate_between_ranks() -> None:
    assert percentile([1, 2, 3, 4], 50) == pytest.approx(2.5)
    assert percentile([5], 99) == 5
    assert math.isnan(percentile([], 50))


def test_a_table_prints_for_the_terminal_and_as_markdown() -> None:
    table = Table("Intake", ours="Journeyman", baseline="bare")
    table.add("events/s", 300.0, 600.0, target=Target(">=", 0.5))
    table.notes.append("a note")
    text = table.text()
    assert "0.50x" in text and ">= 0.5x" in text and "a note" in text
    markdown = table.markdown()
    assert "| metric | Journeyman | bare | ratio | target | met |" in markdown
    assert "| events/s | 300.0 | 600.0 | 0.50x | >= 0.5x | yes |" in markdown


def test_the_results_file_keeps_the_findings_and_the_sections_not_run(tmp_path: Path) -> None:
    path = tmp_path / "benchmarks.md"
    report.write(path, {"machine": "machine one", "intake": "intake one", "scale": "scale one"})
    text = path.read_text()
    path.write_text(text + "\nThe dispatcher is serial: route customers concurrently.\n")
    report.write(path, {"machine": "machine two", "intake": "intake two"})
    text = path.read_text()
    assert "machine two" in text and "machine one" not in text
    assert "intake two" in text and "intake one" not in text
    assert "scale one" in text
    assert text.index("<!-- bench:intake -->") < text.index(report.END) < text.index("Findings")
    assert "The dispatcher is serial" in text


def test_every_section_is_a_module_with_a_run() -> None:
    for name in SECTIONS:
        module = load(name)
        assert name == module.NAME
        assert callable(module.run)
    assert parse(["--quick", "--only", "intake"]).only == ["intake"]
    with pytest.raises(SystemExit):
        parse(["--only", "nothing"])


@pytest.mark.slow
async def test_the_quick_intake_section_compares_the_api_with_a_bare_endpoint(
    tmp_path: Path,
) -> None:
    ctx = Context(quick=True, workdir=tmp_path)
    try:
        tables = await load("intake").run(ctx)
    finally:
        ctx.close()
    (table,) = tables
    assert table.baseline is not None
    rate = table.rows[0]
    assert rate.metric == "events/s"
    assert isinstance(rate.ours, float) and rate.ours > 0
    assert isinstance(rate.baseline, float) and rate.baseline > 0
    assert rate.ratio is not None and rate.ratio > 0
    assert rate.met in (True, False)
    for row in table.rows:
        if not row.metric.startswith("errors"):
            assert isinstance(row.ours, int | float) and row.ours > 0, row.metric
        else:
            assert row.ours == 0, row.metric
    # Both kinds of event were measured: those no journey hears, those one hears.
    heard = {row.metric: row for row in table.rows}["events/s, events a journey hears"]
    assert isinstance(heard.ratio, float) and heard.ratio > 0
    assert not any(ctx.processes), "every process the section started is stopped"


@pytest.mark.slow
async def test_the_quick_segment_section_ticks_over_stored_profiles(tmp_path: Path) -> None:
    section = load("segment")
    ctx = Context(quick=True, workdir=tmp_path)
    try:
        tick, batching, *postgres = await section.run(ctx)
    finally:
        ctx.close()

    rows = {row.metric: row for row in tick.rows}
    assert rows["customers evaluated per second"].ratio is not None
    matched = int(tick.title.split("(")[1].split()[0].replace(",", ""))
    assert rows["customers entered"].ours == matched > 0  # nobody was in the journey yet
    assert all(row.ratio is not None and row.ratio > 0 for row in batching.rows)
    # On PostgreSQL (where one answers): the walk's counts were checked against SQL's.
    for table in postgres:
        assert all(row.ours is not None and row.ours > 0 for row in table.rows)


def test_an_interpreter_sides_runs_are_taken_together():
    """A B B A: a side's throughput is all its journeys over all its time, CPU added and
    divided by all its journeys, histories pooled, memory the peak."""
    from collections import Counter

    from bench.sections.interpreter import Measured, _table
    from bench.workload import HistoryStats

    def run(seconds: float, cpu: float, rss: int, events: int) -> Measured:
        history = HistoryStats(runs=2, events=Counter({"TIMER_FIRED": events}))
        history.wft_latency = [0.1]
        history.wft_run_time = [0.01]
        return Measured("journeyman", 100, 100, 0, seconds, 50.0, history, rss, cpu, 2 * cpu)

    joined = Measured.joined([run(10, 1.0, 100, 4), run(30, 3.0, 300, 8)])
    assert (joined.runs, joined.n, joined.closed, joined.seconds) == (2, 200, 200, 40)
    assert joined.throughput == 5.0  # not the mean of 10/s and 3.3/s
    assert (joined.worker_cpu, joined.server_cpu, joined.worker_peak_rss) == (4.0, 8.0, 300)
    assert joined.history.runs == 4 and joined.history.events_per_run == 3.0
    parts = [run(10, 1.0, 100, 4), run(30, 3.0, 300, 8)]
    order = ["journeyman", "handwritten", "handwritten", "journeyman"]
    table = _table(100, joined, joined, order, {"journeyman": parts, "handwritten": parts})
    cpu = next(row for row in table.rows if row.metric == "worker CPU per journey")
    assert cpu.ours == 20.0  # ms: 4 s over 200 journeys
    # Each run's throughput, in the order they ran.
    assert table.notes[-1].endswith("J 10.0, H 10.0, H 3.3, J 3.3")


async def test_alternate_takes_the_sides_in_turn_reversed_every_other_round_and_pools_them():
    """bench.core.alternate: A B B A A B ..., the first window of a side warmed up for
    longer; a side's rate is all its requests over all its time, percentiles pooled."""
    from bench.core import Window, alternate

    calls: list[tuple[str, int, float, float]] = []

    def side(name: str, rate: float, latency: float):
        async def measure(number: int, seconds: float, warm: float) -> Window:
            calls.append((name, number, seconds, warm))
            requests = int(rate * seconds)
            return Window(
                requests=requests,
                elapsed=seconds,
                errors=0,
                latencies_ms=[latency + number] * requests,
                cpu_seconds={"server": 0.001 * requests},
                peak_rss={"server": 100 * (number + 1)},
            )

        return measure

    pooled = await alternate({"a": side("a", 100, 1.0), "b": side("b", 50, 2.0)}, 4, 8, 2, 1)
    assert [(n, w) for n, w, _s, _warm in calls] == [
        ("a", 0), ("b", 0), ("b", 1), ("a", 1), ("a", 2), ("b", 2), ("b", 3), ("a", 3),
    ]  # fmt: skip
    assert {seconds for _n, _w, seconds, _warm in calls} == {2.0}
    assert [warm for n, w, _s, warm in calls if n == "a"] == [2, 1, 1, 1]
    a, b = pooled["a"], pooled["b"]
    assert (a.requests, a.elapsed, a.rate, b.rate) == (800, 8.0, 100.0, 50.0)
    assert (a.p50_ms, a.p99_ms) == (3.0, 4.0)  # latencies 1, 2, 3, 4 ms, 200 each
    assert a.cpu_ms("server") == 1.0
    assert a.rss_mib("server") == 400 / 2**20
