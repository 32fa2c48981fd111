"""Journeyman's benchmarks, side by side with what Temporal and the framework do alone.

`python -m bench` (`make bench`) runs every section in `bench.sections.SECTIONS`,
prints each table with its ratios and writes docs/benchmarks.md; see bench/README.md.
"""
