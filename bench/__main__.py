"""`python -m bench [--quick] [--only NAME ...] [--output FILE | --no-write] [--keep]`.

Runs the sections (all, or those named) one after the other in a temporary folder,
prints each table as it is done, then writes docs/benchmarks.md: always after a full
run, after a `--quick` run only with an explicit `--output` (quick figures are for
development, not for the record). Exits 1 if a section failed; the others still run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

import psutil

from bench import report
from bench.core import ROOT, Context, machine
from bench.sections import SECTIONS, load

DEFAULT_OUTPUT = ROOT / "docs" / "benchmarks.md"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Journeyman's benchmarks, side by side."
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, a minute or two")
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        metavar="NAME",
        help=f"run only this section (repeatable): {', '.join(SECTIONS)}",
    )
    parser.add_argument(
        "--large",
        action="store_true",
        help="also the sizes that do not fit make bench's 15 minutes (interpreter: 10,000)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the process under test with py-spy; profiles stay in the work folder",
    )
    parser.add_argument("--output", type=Path, help=f"results file (default {DEFAULT_OUTPUT})")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    return parser.parse_args(argv)


def command_line(argv: list[str]) -> str:
    """How this run was started, as someone would type it again."""
    command = " ".join(["python -m bench", *map(shlex.quote, argv)])
    # `make` exports MAKELEVEL to what it runs: `make bench` is the command then.
    if os.environ.get("MAKELEVEL") and not argv:
        return "make bench"
    return command


async def run_sections(ctx: Context, names: list[str]) -> list[report.SectionResult]:
    results = []
    for name in names:
        module = load(name)
        # A `--large` run's figures are a block of their own: they do not replace those
        # of `make bench`'s sizes.
        result = report.SectionResult(
            name + ("-large" if ctx.large else ""),
            module.TITLE + (" (--large sizes)" if ctx.large else ""),
            SECTIONS.index(name) + 1,
        )
        print(f"\n== {result.number}. {result.title} ==", file=sys.stderr, flush=True)
        start = time.monotonic()
        ctx.started = start
        try:
            result.tables = await module.run(ctx)
        except Exception as exc:
            traceback.print_exc()
            result.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        finally:
            ctx.close()
        result.seconds = time.monotonic() - start
        for table in result.tables:
            print("\n" + table.text(), flush=True)
        if result.error:
            print(f"\n{result.title}: FAILED: {result.error}", flush=True)
        results.append(result)
    return results


def main(argv: list[str]) -> int:
    args = parse(argv)
    names = [n for n in SECTIONS if not args.only or n in args.only]
    workdir = Path(tempfile.mkdtemp(prefix="journeyman-bench-"))
    ctx = Context(quick=args.quick, workdir=workdir, large=args.large, profile=args.profile)
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = command_line(argv)
    details = machine()
    print(f"{command}  ({'quick' if args.quick else 'full'}; work folder {workdir})")
    for key, value in details.items():
        print(f"  {key + ':':<18} {value}")
    start = time.monotonic()
    try:
        results = asyncio.run(run_sections(ctx, names))
    finally:
        ctx.close()
        if not args.keep and not args.profile:
            shutil.rmtree(workdir, ignore_errors=True)
    sections = time.monotonic() - start
    # From this process's start: the interpreter, the imports and the machine's details
    # count, as they do in `make bench`'s 15 minutes.
    total = time.time() - psutil.Process().create_time()
    print(f"\n{len(results)} section(s) in {sections:.0f} s; {report.took(total)} in all")
    for result in results:
        print(f"  {result.name}: {result.seconds:.0f} s")
    for key, value in ctx.settings.items():
        print(f"  {key}: {value}")
    output = args.output or (None if args.quick else DEFAULT_OUTPUT)
    if output is not None and not args.no_write:
        blocks = {
            "machine": report.machine_block(
                details, ctx.settings, command, date, total, [(r.name, r.seconds) for r in results]
            )
        }
        blocks |= {r.name: r.markdown(command, date) for r in results}
        report.write(output, blocks)
        print(f"results written to {output}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
