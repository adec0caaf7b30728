"""`python -m tests.chaos [--long] [--seed N] [--payments N] [--keep]`: one fault-suite run,
printed; exit status 1 if anything was lost, duplicated under a new id, or wrong."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import structlog

from tests.chaos.plan import ChaosParams
from tests.chaos.runner import run_chaos


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--long", action="store_true", help="the long run (1000 payments, 7 min)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--payments", type=int, help="override the number of payments")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (process logs)")
    args = parser.parse_args(argv)
    params = ChaosParams.long(args.seed) if args.long else ChaosParams.short(args.seed)
    if args.payments:
        params = dataclasses.replace(params, payments=args.payments)
    workdir = Path(tempfile.mkdtemp(prefix="watcher-chaos-"))
    started = time.strftime("%Y-%m-%d %H:%M:%S")

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    # The watcher code running in this process (creates) logs to a file, not over the report.
    logging.basicConfig(filename=workdir / "harness.log", level=logging.WARNING, force=True)
    structlog.configure(logger_factory=structlog.stdlib.LoggerFactory())
    log(f"fault suite ({'long' if args.long else 'short'}), seed {params.seed}, in {workdir}")
    try:
        report = run_chaos(params, workdir, log)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nstarted {started}; {params}\n")
    print(report.format())
    return 1 if report.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
