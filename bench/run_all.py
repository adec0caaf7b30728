"""Every benchmark, one after another, then one table of the headline numbers.

Each bench runs as a subprocess with `--json PATH` (its flat JSON object of headline numbers),
its output in a log file, never two at once: on 2 cores they would measure each other. Then one
table: detection latency (no hint, with the Voltage-webhook hint, naive 2 s poll), Voltage
requests per payment over the realistic mix (watcher vs naive 2 s poll, per class), polls/s and
deliveries/s per worker against plain requests loops, Redis memory per pending payment and the
dispatcher tick with 100k pending, with a watcher/baseline ratio where there is a baseline.

The benches:

| name | command | full | --quick |
|---|---|---|---|
| detection | `python -m bench.detection --hint` | ~2.5 min | ~35 s |
| deliveries | `python -m bench.deliveries` | ~30 s | ~10 s |
| engine | `python -m bench.engine` | ~1.5 min | ~30 s |
| mix | `python -m bench.detection --mix` | ~5 min | ~2 min |

A bench that exits non-zero shows as "failed (exit N)" with its log's path, a bench whose
script does not exist as "missing"; the rest are still run and shown, and run_all exits 1.
Ctrl-C (or SIGTERM) stops the running bench through its own cleanup (SIGTERM, then SIGKILL
after a minute), prints what it has, and exits 130.

Run (from the project root):

    bench/run_all                      # everything, ~10 minutes
    bench/run_all --quick              # every bench's --quick, ~3 minutes
    bench/run_all --only detection,mix --out /tmp/bench-results
    .venv/bin/python -m bench.run_all --quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import (
    PROJECT_ROOT,
    cpu_model,
    exit_on_sigterm,
    fmt,
    load_average,
    print_table,
    ram_gib,
    redis_server_version,
    stop_group,
    usable_cpus,
)

STOP_GRACE = 60.0  # a bench stopping its Celery workers, simulator and Redis needs a while
HEARTBEAT = 60.0


@dataclass(frozen=True)
class Bench:
    name: str
    module: str
    args: tuple[str, ...]
    timeout: float  # seconds, full run
    quick_timeout: float
    expected: str  # how long it usually takes, full run
    quick_expected: str

    @property
    def script(self) -> Path:
        return PROJECT_ROOT / Path(*self.module.split(".")).with_suffix(".py")


BENCHES = (
    Bench("detection", "bench.detection", ("--hint",), 15 * 60, 5 * 60, "~2.5 min", "~35 s"),
    Bench("deliveries", "bench.deliveries", (), 10 * 60, 5 * 60, "~30 s", "~10 s"),
    Bench("engine", "bench.engine", (), 15 * 60, 6 * 60, "~1.5 min", "~30 s"),
    Bench("mix", "bench.detection", ("--mix",), 25 * 60, 8 * 60, "~5 min", "~2 min"),
)


@dataclass
class Outcome:
    bench: Bench
    command: list[str]
    log_path: Path
    json_path: Path
    status: str = "not run"  # ok | failed (exit N) | failed (timeout ...) | missing | ...
    seconds: float = 0.0
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def say(message: str) -> None:
    print(f"[run_all {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def last_line(path: Path) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - 4096))
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1][:160] if lines else ""


def run_bench(outcome: Outcome, timeout: float) -> None:
    """One bench as a session of its own, waited for with a deadline; fills in the outcome."""
    bench = outcome.bench
    if not bench.script.exists():
        outcome.status = "missing"
        say(f"{bench.name}: {bench.script.relative_to(PROJECT_ROOT)} does not exist; skipped")
        return
    outcome.json_path.unlink(missing_ok=True)
    say(f"{bench.name}: {shlex.join(outcome.command)}  (log {outcome.log_path})")
    began = time.monotonic()
    with outcome.log_path.open("wb") as log_file:
        process = subprocess.Popen(
            outcome.command,
            cwd=PROJECT_ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            while True:
                try:
                    code = process.wait(min(HEARTBEAT, max(0.1, timeout - elapsed(began))))
                    break
                except subprocess.TimeoutExpired:
                    if elapsed(began) >= timeout:
                        say(f"{bench.name}: still running after {duration(timeout)}; stopping it")
                        stop_group(process, STOP_GRACE)
                        outcome.status = f"failed (timeout after {duration(timeout)})"
                        outcome.seconds = elapsed(began)
                        return
                    say(f"{bench.name}: {duration(elapsed(began))}: {last_line(outcome.log_path)}")
        except BaseException:
            # Ctrl-C or SIGTERM: let the bench stop its own children, then record it.
            say(f"{bench.name}: interrupted; stopping it (up to {STOP_GRACE:.0f}s)")
            stop_group(process, STOP_GRACE)
            outcome.status = "interrupted"
            outcome.seconds = elapsed(began)
            raise
    outcome.seconds = elapsed(began)
    outcome.status = "ok" if code == 0 else f"failed (exit {code})"
    if outcome.json_path.exists():
        try:
            outcome.values = json.loads(outcome.json_path.read_text())
        except ValueError:
            outcome.status = f"failed (exit {code}, unreadable JSON)"
    elif code == 0:
        outcome.status = "failed (exit 0, no JSON written)"
    say(f"{bench.name}: {outcome.status} in {duration(outcome.seconds)}")


def elapsed(since: float) -> float:
    return time.monotonic() - since


# --- the table --------------------------------------------------------------------------------


Value = float | None


@dataclass(frozen=True)
class Row:
    """One line of the table: a watcher number next to a baseline number, from one bench."""

    measure: str
    bench: str
    watcher: Callable[[dict[str, Any]], Value | str]
    baseline_label: str = ""
    baseline: Callable[[dict[str, Any]], Value] | None = None
    digits: int = 0


def key(name: str) -> Callable[[dict[str, Any]], Value]:
    def read(values: dict[str, Any]) -> Value:
        value = values.get(name)
        return float(value) if isinstance(value, int | float) else None

    return read


def tick_triple(values: dict[str, Any]) -> str:
    parts = [values.get(k) for k in ("tick_ms_p50", "tick_ms_p99", "tick_ms_max")]
    return " / ".join(fmt(p, 1) if isinstance(p, int | float) else "-" for p in parts)


MIX_CLASSES = (
    ("paid_early", "paid within 60 s"),
    ("paid_late", "paid after 60 s"),
    ("expired", "never paid: expired"),
    ("failed", "failed"),
    ("all", "all payments"),
)


def sections(outcomes: dict[str, Outcome]) -> list[tuple[str, list[Row]]]:
    """The rows, grouped under short titles (the sizes the benches ran with go in notes())."""
    eng = outcomes["engine"].values
    dlv = outcomes["deliveries"].values
    naive = "naive 2 s poll"
    threads = dlv.get("plain_threads", 8)
    tick_pending = eng.get("tick_pending")
    pending = f"{tick_pending:,}" if isinstance(tick_pending, int) else "100k"
    burst = eng.get("burst_due")
    return [
        (
            "Detection latency (ms)",
            [
                Row(
                    "p50, no hint (sweeps)",
                    "detection",
                    key("watcher_latency_ms_p50"),
                    naive,
                    key("naive_latency_ms_p50"),
                ),
                Row(
                    "p99, no hint (sweeps)",
                    "detection",
                    key("watcher_latency_ms_p99"),
                    naive,
                    key("naive_latency_ms_p99"),
                ),
                Row(
                    "p50, with the Voltage-webhook hint",
                    "detection",
                    key("hint_latency_ms_p50"),
                    naive,
                    key("naive_latency_ms_p50"),
                ),
                Row(
                    "p99, with the Voltage-webhook hint",
                    "detection",
                    key("hint_latency_ms_p99"),
                    naive,
                    key("naive_latency_ms_p99"),
                ),
            ],
        ),
        (
            "Voltage requests per payment, realistic mix",
            [
                Row(
                    label,
                    "mix",
                    key(f"watcher_requests_per_payment_{name}"),
                    naive,
                    key(f"naive_requests_per_payment_{name}"),
                    1,
                )
                for name, label in MIX_CLASSES
            ],
        ),
        (
            "Throughput of one worker process",
            [
                Row(
                    "polls/s per worker",
                    "engine",
                    key("polls_per_s_worker"),
                    "plain requests loop, 1 thread",
                    key("polls_per_s_plain_1"),
                ),
                Row(
                    "polls/s per worker",
                    "engine",
                    key("polls_per_s_worker"),
                    "plain requests loop, 8 threads",
                    key("polls_per_s_plain_8"),
                ),
                Row(
                    "deliveries/s per worker",
                    "deliveries",
                    key("deliveries_per_s_worker"),
                    "plain requests loop, 1 thread",
                    key("deliveries_per_s_plain_1"),
                ),
                Row(
                    "deliveries/s per worker",
                    "deliveries",
                    key("deliveries_per_s_worker"),
                    f"plain requests loop, {threads} threads",
                    key("deliveries_per_s_plain_threads"),
                ),
            ],
        ),
        (
            "Engine at scale",
            [
                Row(
                    "Redis memory per pending payment (bytes)",
                    "engine",
                    key("redis_bytes_per_pending_payment"),
                ),
                Row(
                    f"dispatcher tick, {pending} pending, p50 / p99 / max (ms)",
                    "engine",
                    tick_triple,
                ),
                Row(
                    f"one tick handing out {burst:,} payments due at once (ms)"
                    if isinstance(burst, int)
                    else "one tick handing out a burst due at once (ms)",
                    "engine",
                    key("burst_claim_ms"),
                    digits=1,
                ),
            ],
        ),
    ]


def notes(outcomes: dict[str, Outcome]) -> list[str]:
    """What each section's numbers are, with the sizes the benches really ran with."""
    det = outcomes["detection"].values
    mix = outcomes["mix"].values
    dlv = outcomes["deliveries"].values
    lines = []
    if det:
        lines.append(
            f"detection: {det.get('payments')} payments per side, settles/fails uniform over "
            f"{fmt(det.get('settle_window_s'))} s; latency = settle/fail answer -> a verified "
            "webhook at the bench's subscriber (naive: the first GET that answers final); the "
            "hint side gets "
            "Voltage's signed webhook right after the settle/fail answer"
        )
    if mix:
        shares = ", ".join(
            f"{label} {100 * float(mix.get(f'mix_share_{name}') or 0):.0f}%"
            for name, label in MIX_CLASSES[:-1]
        )
        lines.append(
            f"mix: {mix.get('payments')} payments per side, invoice expiration "
            f"{mix.get('mix_expiration_s')} s, {shares}; watcher with production defaults; "
            "requests = the payment's own GETs (create-time invoice reads included) + create "
            "POSTs + the watcher's list calls shared out evenly"
        )
    if dlv:
        lines.append(
            f"deliveries: {dlv.get('deliveries')} webhooks, one `celery -A watcher worker "
            f"--pool {dlv.get('pool')} --concurrency {dlv.get('concurrency')}` vs the same "
            "signed bodies posted by plain requests.Session loops"
        )
    if outcomes["engine"].values:
        lines.append(
            "engine: polls of already-due payments by one worker (--pool threads x8) vs plain "
            "GET loops; bytes = Redis used_memory growth per pending payment; tick = the "
            "production dispatcher tick (claim + publish) once a second"
        )
    return lines


def render(row: Row, outcome: Outcome) -> list[str]:
    if not outcome.ok:
        return [row.measure, outcome.status, row.baseline_label or "-", "-", "-"]
    mine = row.watcher(outcome.values)
    theirs = row.baseline(outcome.values) if row.baseline is not None else None
    shown = mine if isinstance(mine, str) else fmt(mine, row.digits)
    ratio = "-"
    if isinstance(mine, float) and isinstance(theirs, float) and theirs:
        ratio = f"{mine / theirs:.{2 if mine / theirs >= 0.1 else 3}f}"
    return [
        row.measure,
        shown,
        row.baseline_label or "-",
        fmt(theirs, row.digits) if row.baseline is not None else "-",
        ratio,
    ]


def print_report(
    outcomes: dict[str, Outcome], command: str, results: Path, started: datetime, load: str
) -> None:
    print()
    print("=== voltage-watcher benchmarks ===")
    ram = ram_gib()
    print(
        f"machine: {os.cpu_count()} cores ({usable_cpus()} usable), "
        f"{fmt(ram, 1) if ram else '?'} GiB RAM, {cpu_model()}, "
        f"Python {platform.python_version()} ({sys.executable}), "
        f"redis-server {redis_server_version()}, {platform.system()} {platform.release()} "
        f"{platform.machine()}"
    )
    print(
        f"date: {started:%Y-%m-%d %H:%M} UTC, took {duration(time.time() - started.timestamp())}, "
        f"load avg at start {load}"
    )
    print(f"command: {command}")
    print(f"results: {results} (per bench: NAME.log with its full report, NAME.json)")
    print()
    rows: list[list[str]] = []
    for title, group in sections(outcomes):
        shown = [row for row in group if outcomes[row.bench].status != "not run"]
        if shown:
            rows.append([title, "", "", "", ""])
        for row in shown:
            rendered = render(row, outcomes[row.bench])
            rendered[0] = "  " + rendered[0]
            rows.append(rendered)
    print_table(
        "Headline numbers (ratio = watcher / baseline: below 1 is better for latency and "
        "requests, above 1 for throughput)",
        ["measure", "watcher", "baseline", "baseline value", "ratio"],
        rows,
    )
    for line in notes(outcomes):
        print(f"  {line}")
    print()
    print("Benches (run one after another, never at once)")
    for name, outcome in outcomes.items():
        where = "" if outcome.status in ("missing", "not run") else f"  log: {outcome.log_path}"
        took = f" in {duration(outcome.seconds)}" if outcome.seconds else ""
        print(f"  {name:<11} {outcome.status}{took}{where}")
        if outcome.status not in ("missing", "not run"):
            print(f"  {'':<11} {shlex.join(outcome.command)}")
    print()


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None, prog: str) -> argparse.Namespace:
    names = [b.name for b in BENCHES]
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run every benchmark one after another and print one table.",
    )
    parser.add_argument("--quick", action="store_true", help="pass --quick to every bench")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME[,NAME]",
        help=f"run only these benches (repeatable): {', '.join(names)}",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="directory for the logs and JSON files (default: a new temp dir)",
    )
    args = parser.parse_args(argv)
    only = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
    unknown = sorted(set(only) - set(names))
    if unknown:
        parser.error(f"unknown bench {', '.join(unknown)}; choose from {', '.join(names)}")
    args.only = only or names
    return args


def main(argv: Sequence[str] | None = None, prog: str = "python -m bench.run_all") -> int:
    args = parse_args(argv, prog)
    exit_on_sigterm()
    command = shlex.join([prog, *(sys.argv[1:] if argv is None else argv)])
    started = datetime.now(UTC)
    load = load_average()
    results = args.out or Path(tempfile.mkdtemp(prefix="vw-bench-run-all-"))
    results.mkdir(parents=True, exist_ok=True)
    results = results.resolve()
    outcomes: dict[str, Outcome] = {}
    for bench in BENCHES:
        json_path = results / f"{bench.name}.json"
        cmd = [sys.executable, "-m", bench.module, *bench.args, "--json", str(json_path)]
        if args.quick:
            cmd.append("--quick")
        outcomes[bench.name] = Outcome(bench, cmd, results / f"{bench.name}.log", json_path)
    chosen = [b for b in BENCHES if b.name in args.only]
    expected = ", ".join(
        f"{b.name} {b.quick_expected if args.quick else b.expected}" for b in chosen
    )
    say(f"running {len(chosen)} benches one after another ({expected}); results in {results}")
    interrupted = False
    try:
        for bench in chosen:
            run_bench(outcomes[bench.name], bench.quick_timeout if args.quick else bench.timeout)
    except (KeyboardInterrupt, SystemExit):
        interrupted = True
    print_report(outcomes, command, results, started, load)
    if interrupted:
        return 130
    return 0 if all(outcomes[b.name].ok for b in chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
