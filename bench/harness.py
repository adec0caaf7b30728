"""What every benchmark stands on: the stack, CPU accounting, how a run is measured (the
baselines: `bench.naive`; what is printed: `bench.report`). All it starts is ours, on loopback,
in a temp dir (a redis-server on a free port, never 6379), each child in a session of its own,
stopped in order; every wait has a deadline."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
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

from bench.report import load_average, log, per
from watcher.launcher import Process, celery_command, clean_env, wait_ready, watcher_command

wait_for = wait_ready  # the benches' name for it

PROJECT_ROOT = Path(__file__).resolve().parents[1]
API_KEY = "bench-sim-key-0123456789abcdef"
ORG_ID = "org-bench"
ENV_ID = "env-bench"
PIDBOX = "_kombu.binding.celery.pidbox"  # only workers bind one, in the broker


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


def timed(usage: Callable[[], Usage], work: Callable[[], Any]) -> tuple[float, Delta, Any]:
    """Wall seconds, the usage between and the result of `work()`: how every run is measured."""
    before, began = usage(), time.perf_counter()
    result = work()
    return time.perf_counter() - began, before.to(usage()), result


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
