"""Redis restarting under running workers and beat: the processes ride it out and nothing is
lost. (Celery 5.7.0 workers died of it with "Unrecoverable error: AttributeError"; the fault
suite found that.)"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import SIM_KEY, SimControl
from tests.support import (
    CeleryProcess,
    beat_command,
    clean_env,
    stack_values,
    wait_until,
    worker_command,
)
from watcher.engine.watching import create_and_watch
from watcher.redis_server import RedisServer
from watcher.runtime import Runtime
from watcher.settings import load_settings
from watcher.simulator.server import SimulatorServer

pytestmark = pytest.mark.timeout(240)


def test_workers_and_beat_survive_redis_restarts_and_keep_detecting(
    tmp_path: Path, simulator: SimulatorServer, sim_control: SimControl
) -> None:
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    values = stack_values(
        redis_url=server.url, voltage_url=simulator.base_url, api_key=SIM_KEY, data_dir=tmp_path
    )
    env = clean_env(**values)
    rt = Runtime.from_settings(load_settings(**{k.lower(): v for k, v in values.items()}))
    worker = CeleryProcess(worker_command("w1"), env, tmp_path / "worker.log").start()
    beat = CeleryProcess(beat_command(tmp_path / "beat-schedule"), env, tmp_path / "beat.log")
    beat.start()
    try:
        worker.wait_ready()
        # Slow answers keep poll tasks in flight (unacknowledged) when Redis goes away.
        others = [create_and_watch(rt, amount_msats=1_000).record.id for _ in range(12)]
        fault = sim_control.fault(kind="latency", latency=0.3, method="GET", path="/payments/")
        for other in others:  # due now: sweeps detect, so nothing else would poll them
            rt.payments.reschedule(other, rt.clock())
        wait_until(lambda: rt.payments.counters().get("polls", 0) > 0, message="polls in flight")
        for hard in (True, False):
            payment = create_and_watch(rt, amount_msats=1_000).record.id
            if hard:
                server.kill()
            else:
                server.stop()
            time.sleep(1.0)  # Redis stays down for a while: the point of the test
            server.start()
            sim_control.settle(payment)
            wait_until(
                lambda p=payment: (r := rt.payments.get(p)) is not None and r.status == "completed",
                timeout=60,
                message=f"detection after a {'SIGKILL' if hard else 'SIGTERM'} of Redis",
            )
            assert worker.alive, worker.log_text()[-3000:]
            assert beat.alive, beat.log_text()[-3000:]
        assert "Unrecoverable error" not in worker.log_text()
        assert others
    finally:
        sim_control.call("DELETE", f"/faults/{fault}")
        worker.stop()
        beat.stop()
        rt.redis.close()
        server.stop()
