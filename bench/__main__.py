"""Run the benchmarks and print the results table.

python -m bench                  # all, full rounds (about 3-4 minutes on 2 cores)
python -m bench --quick          # fewer rounds, for a CI smoke run (about 40 s)
python -m bench --only intake    # some of them: passthrough checkout memory tokens intake widget
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
import traceback
from pathlib import Path

from .common import Results, machine

BENCHMARKS = (
    "passthrough",
    "checkout",
    "memory",
    "tokens",
    "intake",
    "intake_postgres",
    "widget",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (CI smoke run)")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these")
    options = parser.parse_args(argv)

    # tests.support (valid PNG/PDF bytes, the filled-in form) is imported from the checkout.
    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    # Delivery retries and refused uploads log warnings; they are counted in the results.
    logging.getLogger("certwidget").setLevel(logging.ERROR)

    print(f"machine: {machine()}")
    print(f"mode: {'quick' if options.quick else 'full'}", flush=True)
    results = Results(quick=options.quick)
    started = time.monotonic()
    failed = []
    for name in options.only or BENCHMARKS:
        try:
            importlib.import_module(f"bench.{name}").run(results)
        except Exception:
            traceback.print_exc()
            failed.append(name)
            results.add(name, "-", "-", "benchmark crashed (traceback above)", "-", False)
    print(f"\nmachine: {machine()}")
    print(f"{'quick' if options.quick else 'full'} run in {time.monotonic() - started:.0f} s\n")
    print(results.table())
    misses = [row.bench for row in results.rows if row.verdict == "MISS"]
    print(f"\n{len(misses)} goal(s) missed" + (": " + "; ".join(misses) if misses else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
