"""Every benchmark, one after another, then one table of the headline numbers.

Each bench is a subprocess with `--json PATH` (its flat JSON of headline numbers), its output in a
log, never two at once (on 2 cores they would measure each other). A bench exiting non-zero shows
as "failed (exit N)", a missing script as "missing"; the rest still run, and run_all exits 1.
Ctrl-C (or SIGTERM) stops the running bench through its own cleanup (SIGTERM, then SIGKILL after a
minute), prints what it has and exits 130. The benches, their sizes and timings: bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
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

from bench import harness as h
from bench import report as rep
from bench.harness import PROJECT_ROOT
from bench.report import fmt
from watcher.launcher import Process

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


say = functools.partial(rep.log, who="run_all")


def duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def run_bench(out: Outcome, timeout: float) -> None:
    """One bench as a session of its own, waited for with a deadline; fills in the outcome."""
    name, began = out.bench.name, time.monotonic()
    script = PROJECT_ROOT / Path(*out.bench.module.split(".")).with_suffix(".py")
    if not script.exists():
        out.status = "missing"
        say(f"{name}: {script.relative_to(PROJECT_ROOT)} does not exist; skipped")
        return
    out.json_path.unlink(missing_ok=True)
    out.log_path.unlink(missing_ok=True)
    say(f"{name}: {shlex.join(out.command)}  (log {out.log_path})")
    proc = Process(name, out.command, os.environ, log_path=out.log_path, cwd=PROJECT_ROOT).start()
    assert proc.process is not None
    try:
        while (elapsed := time.monotonic() - began) < timeout:
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = proc.process.wait(min(HEARTBEAT, max(0.1, timeout - elapsed)))
                break
            if (elapsed := time.monotonic() - began) < timeout:
                say(f"{name}: {duration(elapsed)}: {(proc.tail(1) or '')[:160]}")
        else:
            say(f"{name}: still running after {duration(timeout)}; stopping it")
            proc.stop(STOP_GRACE)
            out.status, out.seconds = f"failed (timeout after {duration(timeout)})", timeout
            return
    except BaseException:  # Ctrl-C or SIGTERM: let the bench stop its own children
        say(f"{name}: interrupted; stopping it (up to {STOP_GRACE:.0f}s)")
        proc.stop(STOP_GRACE)
        out.status, out.seconds = "interrupted", time.monotonic() - began
        raise
    out.seconds, out.status = (
        time.monotonic() - began,
        "ok" if code == 0 else f"failed (exit {code})",
    )
    if out.json_path.exists():
        try:
            out.values = json.loads(out.json_path.read_text())
        except ValueError:
            out.status = f"failed (exit {code}, unreadable JSON)"
    elif code == 0:
        out.status = "failed (exit 0, no JSON written)"
    say(f"{name}: {out.status} in {duration(out.seconds)}")


# --- the table: (measure, bench, watcher key or reader, baseline label, baseline key, digits) ---

Reader = Callable[[dict[str, Any]], float | str | None]
Row = tuple[str, str, str | Reader, str, str | None, int]
MIX_CLASSES = (("paid_early", "paid within 60 s"), ("paid_late", "paid after 60 s"),
               ("expired", "never paid: expired"), ("failed", "failed"),
               ("all", "all payments"))  # fmt: skip


def number(values: dict[str, Any], name: str) -> float | None:
    value = values.get(name)
    return float(value) if isinstance(value, int | float) else None


def tick_triple(values: dict[str, Any]) -> str:
    parts = [number(values, f"tick_ms_{k}") for k in ("p50", "p99", "max")]
    return " / ".join(fmt(p, 1) for p in parts)


def sections(outcomes: dict[str, Outcome]) -> list[tuple[str, list[Row]]]:
    """The rows, grouped under short titles (the sizes the benches ran with go in notes())."""
    eng, naive = outcomes["engine"].values, "naive 2 s poll"
    threads = outcomes["deliveries"].values.get("plain_threads", 8)
    pending = f"{p:,}" if isinstance(p := eng.get("tick_pending"), int) else "100k"
    burst = f"{b:,} payments" if isinstance(b := eng.get("burst_due"), int) else "a burst"
    hows = (("watcher", "no hint (sweeps)"), ("hint", "with the Voltage-webhook hint"))
    plains = (("polls", "engine", ((1, "", "1"), (8, "s", "8"))),
              ("deliveries", "deliveries", ((1, "", "1"), (threads, "s", "threads"))))  # fmt: skip
    return [
        ("Detection latency (ms)", [
            (f"p{p}, {how}", "detection", f"{side}_latency_ms_p{p}", naive,
             f"naive_latency_ms_p{p}", 0) for side, how in hows for p in (50, 99)]),
        ("Voltage requests per payment, realistic mix", [
            (label, "mix", f"watcher_requests_per_payment_{name}", naive,
             f"naive_requests_per_payment_{name}", 1) for name, label in MIX_CLASSES]),
        ("Throughput of one worker process", [
            (f"{what}/s per worker", bench, f"{what}_per_s_worker",
             f"plain requests loop, {n} thread{s}", f"{what}_per_s_plain_{suffix}", 0)
            for what, bench, runs in plains for n, s, suffix in runs]),
        ("Engine at scale", [
            ("Redis memory per pending payment (bytes)", "engine",
             "redis_bytes_per_pending_payment", "", None, 0),
            (f"dispatcher tick, {pending} pending, p50 / p99 / max (ms)", "engine", tick_triple,
             "", None, 0),
            (f"one tick handing out {burst} due at once (ms)", "engine", "burst_claim_ms", "",
             None, 1)]),
    ]  # fmt: skip


def notes(outcomes: dict[str, Outcome]) -> list[str]:
    """What each section's numbers are, with the sizes the benches really ran with."""
    det, mix, dlv, eng = (outcomes[n].values for n in ("detection", "mix", "deliveries", "engine"))
    shares = ", ".join(f"{label} {100 * float(mix.get(f'mix_share_{name}') or 0):.0f}%"
                       for name, label in MIX_CLASSES[:-1])  # fmt: skip
    lines = [
        det and f"detection: {det.get('payments')} payments per side, settles/fails uniform over "
        f"{fmt(det.get('settle_window_s'))} s; latency = settle/fail answer -> a verified webhook "
        "at the bench's subscriber (naive: the first GET that answers final); the hint side gets "
        "Voltage's signed webhook right after the settle/fail answer",
        mix and f"mix: {mix.get('payments')} payments per side, invoice expiration "
        f"{mix.get('mix_expiration_s')} s, {shares}; watcher with production defaults; requests = "
        "the payment's own GETs (create-time invoice reads included) + create POSTs + the "
        "watcher's list calls shared out evenly",
        dlv and f"deliveries: {dlv.get('deliveries')} webhooks, one `celery -A watcher worker "
        f"--pool {dlv.get('pool')} --concurrency {dlv.get('concurrency')}` vs the same signed "
        "bodies posted by plain requests.Session loops",
        eng and "engine: polls of already-due payments by one worker (--pool threads x8) vs plain "
        "GET loops; bytes = Redis used_memory growth per pending payment; tick = the production "
        "dispatcher tick (claim + publish) once a second",
    ]  # fmt: skip
    return [line for line in lines if line]


def render(row: Row, outcome: Outcome) -> list[str]:
    measure, _, watcher, label, baseline, digits = row
    if outcome.status != "ok":
        return [measure, outcome.status, label or "-", "-", "-"]
    v = outcome.values
    mine = number(v, watcher) if isinstance(watcher, str) else watcher(v)
    theirs = number(v, baseline) if baseline is not None else None
    ratio = "-"
    if isinstance(mine, float) and isinstance(theirs, float) and theirs:
        ratio = f"{mine / theirs:.{2 if mine / theirs >= 0.1 else 3}f}"
    shown = mine if isinstance(mine, str) else fmt(mine, digits)
    return [measure, shown, label or "-", fmt(theirs, digits) if baseline else "-", ratio]


def print_report(outcomes: dict[str, Outcome], command: str, results: Path, started: datetime,
                 load: str) -> None:  # fmt: skip
    ram = rep.ram_gib()
    print(
        f"\n=== voltage-watcher benchmarks ===\nmachine: {os.cpu_count()} cores "
        f"({rep.usable_cpus()} usable), {fmt(ram, 1) if ram else '?'} GiB RAM, {rep.cpu_model()}, "
        f"Python {platform.python_version()} ({sys.executable}), redis-server "
        f"{rep.redis_server_version()}, {platform.system()} {platform.release()} "
        f"{platform.machine()}\ndate: {started:%Y-%m-%d %H:%M} UTC, took "
        f"{duration(time.time() - started.timestamp())}, load avg at start {load}\n"
        f"command: {command}\nresults: {results} (per bench: NAME.log with its full report, "
        "NAME.json)\n"
    )
    rows: list[list[str]] = []
    for title, group in sections(outcomes):
        shown = [row for row in group if outcomes[row[1]].status != "not run"]
        rows += [[title, "", "", "", ""]] if shown else []
        rows += [["  " + r[0], *r[1:]] for r in (render(row, outcomes[row[1]]) for row in shown)]
    rep.print_table(
        "Headline numbers (ratio = watcher / baseline: below 1 is better for latency and "
        "requests, above 1 for throughput)",
        ["measure", "watcher", "baseline", "baseline value", "ratio"], rows,
    )  # fmt: skip
    for line in notes(outcomes):
        print(f"  {line}")
    print("\nBenches (run one after another, never at once)")
    for name, out in outcomes.items():
        ran = out.status not in ("missing", "not run")
        took = f" in {duration(out.seconds)}" if out.seconds else ""
        print(f"  {name:<11} {out.status}{took}{f'  log: {out.log_path}' if ran else ''}")
        if ran:
            print(f"  {'':<11} {shlex.join(out.command)}")
    print()


def parse_args(argv: Sequence[str] | None, prog: str) -> argparse.Namespace:
    names = [b.name for b in BENCHES]
    parser = argparse.ArgumentParser(
        prog=prog, description="Run every benchmark one after another and print one table."
    )
    rep.options(
        parser,
        ("--quick", "store_true", False, "pass --quick to every bench"),
        ("--only", "append", [], f"NAME[,NAME]: run only these benches (repeatable): "
         f"{', '.join(names)}"),
        ("--out", Path, None, "directory for the logs and JSON files (default: a new temp dir)"),
    )  # fmt: skip
    args = parser.parse_args(argv)
    only = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
    if unknown := sorted(set(only) - set(names)):
        parser.error(f"unknown bench {', '.join(unknown)}; choose from {', '.join(names)}")
    args.only = only or names
    return args


def main(argv: Sequence[str] | None = None, prog: str = "python -m bench.run_all") -> int:
    args = parse_args(argv, prog)
    h.exit_on_sigterm()
    command = shlex.join([prog, *(sys.argv[1:] if argv is None else argv)])
    started, load = datetime.now(UTC), rep.load_average()
    results = args.out or Path(tempfile.mkdtemp(prefix="vw-bench-run-all-"))
    results.mkdir(parents=True, exist_ok=True)
    results = results.resolve()
    outcomes: dict[str, Outcome] = {}
    for b in BENCHES:
        json_path = results / f"{b.name}.json"
        cmd = [sys.executable, "-m", b.module, *b.args, "--json", str(json_path)]
        cmd += ["--quick"] if args.quick else []
        outcomes[b.name] = Outcome(b, cmd, results / f"{b.name}.log", json_path)
    chosen = [b for b in BENCHES if b.name in args.only]
    expected = ", ".join(
        f"{b.name} {b.quick_expected if args.quick else b.expected}" for b in chosen
    )
    say(f"running {len(chosen)} benches one after another ({expected}); results in {results}")
    try:
        for b in chosen:
            run_bench(outcomes[b.name], b.quick_timeout if args.quick else b.timeout)
    except (KeyboardInterrupt, SystemExit):
        print_report(outcomes, command, results, started, load)
        return 130
    print_report(outcomes, command, results, started, load)
    return 0 if all(outcomes[b.name].status == "ok" for b in chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
