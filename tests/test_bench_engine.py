"""Smoke test of `bench.engine`: a tiny run end to end, with its exact-count checks.

It runs as a process of its own: the benchmark starts its own redis-server, simulator and
worker, and builds the Celery app from its environment, which must not leak into this session.
No timing is checked, only that every count held (exit 0) and the JSON has its exact keys.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.engine import JSON_KEYS
from tests.support import clean_env

ROOT = Path(__file__).resolve().parents[1]


def test_a_tiny_engine_run_counts_everything_and_writes_its_numbers(tmp_path: Path) -> None:
    out = tmp_path / "engine.json"
    tiny = ["--polls", "20", "--memory-payments", "200", "--tick-pending", "1000", "--ticks", "2"]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.engine", *tiny, "--burst", "200", "--json", str(out)],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "PROBLEM" not in proc.stdout
    numbers = json.loads(out.read_text())
    assert sorted(numbers) == sorted(JSON_KEYS)
    assert all(isinstance(value, int | float) for value in numbers.values()), numbers
    assert numbers["tick_pending"] == 1000
    assert numbers["burst_due"] == 200
    assert numbers["tick_claimed_mean"] > 0
