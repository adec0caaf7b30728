"""The supervisor's parts, in process: restart backoff, the data-dir lock, port checks, and a
dead child reaped and restarted (tests/test_up.py runs the whole `watcher up`)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.support import wait_until
from watcher.preflight import DataDirLock, SupervisorError
from watcher.redis_server import free_port
from watcher.restarts import BACKOFF_CAP, BACKOFF_FIRST, MAX_RESTARTS_PER_MINUTE, Backoff, Child
from watcher.settings import Settings, load_settings
from watcher.supervisor import Supervisor, UpOptions


def _settings(data_dir: Path) -> Settings:
    return load_settings(_env_file=None, watcher_data_dir=data_dir, watcher_redis_url=None)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_restart_delays_double_up_to_a_cap_and_a_crash_loop_gives_up() -> None:
    backoff = Backoff()
    backoff.launched(0.0, restart=False)
    delays = []
    now = 1.0
    for _ in range(MAX_RESTARTS_PER_MINUTE):
        delay = backoff.died(now)
        assert delay is not None
        delays.append(delay)
        now += delay
        backoff.launched(now, restart=True)
        now += 0.1
    assert delays == [BACKOFF_FIRST * 2**n for n in range(MAX_RESTARTS_PER_MINUTE)]
    assert backoff.died(now) is None  # too many restarts in a minute


def test_a_process_that_ran_a_while_starts_over_at_the_first_delay() -> None:
    backoff = Backoff(consecutive=6)
    backoff.launched(0.0, restart=True)
    assert backoff.died(3600.0) == BACKOFF_FIRST
    crash_looping = Backoff(consecutive=20)
    crash_looping.launched(100.0, restart=False)
    assert crash_looping.died(101.0) == BACKOFF_CAP


def test_the_lock_names_its_holder_and_a_killed_holder_frees_it(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, pathlib; from watcher.preflight import DataDirLock; "
            f"DataDirLock(pathlib.Path({str(tmp_path)!r})).acquire(); print('held', flush=True); "
            "time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"held\n"
        with pytest.raises(SupervisorError) as refused:
            DataDirLock(tmp_path).acquire()
        assert f"pid {holder.pid}" in str(refused.value)
        assert str(tmp_path) in str(refused.value)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    lock = DataDirLock(tmp_path)
    lock.acquire()  # the kernel dropped the dead holder's lock
    lock.release()


@pytest.mark.parametrize(
    ("field", "flag"), [("flower_port", "--flower-port"), ("simulator_port", "--simulator-port")]
)
def test_a_busy_port_is_refused_before_anything_starts(
    tmp_path: Path, busy_port: int, field: str, flag: str
) -> None:
    options = UpOptions(api_port=free_port(), simulate=True, flower_port=None)
    setattr(options, field, busy_port)
    supervisor = Supervisor(_settings(tmp_path / "data"), options)
    with capture_logs() as logs, pytest.raises(SupervisorError) as refused:
        supervisor.start()
    supervisor.stop()
    assert str(busy_port) in str(refused.value)
    assert flag in str(refused.value)
    assert supervisor.redis is None
    assert supervisor.children == []
    assert logs == []  # not "watcher is up", not even "watcher stopped"
    DataDirLock(tmp_path / "data").acquire()  # stop() gave the data dir back


def test_a_dead_child_is_reaped_logged_and_restarted_after_its_delay(tmp_path: Path) -> None:
    supervisor = Supervisor(_settings(tmp_path), UpOptions())
    child = Child("short-lived", [sys.executable, "-c", "raise SystemExit(3)"])
    child.start(supervisor.env)
    child.backoff.launched(0.0, restart=False)
    assert child.process is not None
    first = child.process
    wait_until(lambda: first.poll() is not None, message="the child to exit")
    with capture_logs() as logs:
        assert supervisor._tend(child, 1.0)
        assert supervisor._tend(child, 1.0 + BACKOFF_FIRST / 2)  # not due yet
        assert child.process is first
        assert supervisor._tend(child, 1.0 + BACKOFF_FIRST)
    assert child.process is not first
    assert first.returncode == 3  # reaped: no zombie left behind
    died, restarted = logs
    assert died["event"] == "process died; restarting it"
    assert (died["process"], died["exit_code"], died["next_delay"]) == (
        "short-lived",
        3,
        BACKOFF_FIRST,
    )
    assert restarted["event"] == "process restarted"
    child.process.wait(10)
