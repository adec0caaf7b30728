"""The README's "Try it" path, run exactly as written, in three shells, against a fresh stack.

Issue 13: the README's Running section stopped half way and went stale. The code blocks under
"### Try it" are the test's script: terminal 1 and terminal 2 run in the background (they run
until Ctrl-C), terminal 3's two blocks run one after the other in one shell, with the one thing
a person does between them, waiting until terminal 2 printed the webhook, done by the test.
Only WATCHER_DATA_DIR is added to the environment, so the stack's data stays in a temporary
directory, not in the checkout's ./data.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import Stack
from tests.support import clean_env, wait_until

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parent.parent
SECTION = "### Try it"
PORTS = {8080: "the API", 8090: "the simulator", 8000: "the example receiver"}


def try_it_blocks(readme: str) -> list[str]:
    """The fenced bash blocks of the "Try it" section, in order."""
    start = readme.index(SECTION)
    end = readme.index("\n### ", start + len(SECTION))
    return re.findall(r"```bash\n(.*?)```", readme[start:end], flags=re.DOTALL)


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        # As the servers bind: a connection of an earlier run in TIME_WAIT does not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Shell:
    """One terminal: `bash -c` on a block in the checkout, its output in a file."""

    def __init__(self, name: str, script: str, env: dict[str, str], logs: Path) -> None:
        self.log = logs / f"{name}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                ["bash", "-c", script],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """Ctrl-C, as a person would, then whatever is left."""
        for signum, wait in ((signal.SIGINT, 30), (signal.SIGKILL, 10)):
            if self.process.poll() is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(wait)


@pytest.fixture
def shells() -> Iterator[list[Shell]]:
    started: list[Shell] = []
    yield started
    for shell in reversed(started):
        shell.stop()


def test_the_readme_try_it_path_runs_as_written(tmp_path: Path, shells: list[Shell]) -> None:
    blocks = try_it_blocks((ROOT / "README.md").read_text())
    assert len(blocks) == 4, blocks
    up_block, receiver_block, pay_block, look_block = blocks
    busy = [f"{port} ({what})" for port, what in PORTS.items() if not port_is_free(port)]
    assert not busy, f"the README's ports are taken on this machine: {busy}"
    env = clean_env(WATCHER_DATA_DIR=str(tmp_path / "data"))

    terminal1 = Shell("terminal1", up_block, env, tmp_path)
    shells.append(terminal1)

    def api_ready() -> bool:
        with contextlib.suppress(requests.ConnectionError):
            return requests.get("http://127.0.0.1:8080/readyz", timeout=1).ok
        return False

    wait_until(api_ready, timeout=90, interval=0.3, message="terminal 1's stack")
    assert "SIMULATED VOLTAGE" in terminal1.output()

    terminal2 = Shell("terminal2", receiver_block, env, tmp_path)
    shells.append(terminal2)
    wait_until(lambda: not port_is_free(8000), timeout=60, message="terminal 2's receiver")

    # Terminal 3: the first block, then (as a person watching terminal 2) wait for the webhook,
    # then the second block, in the same shell so $ID carries over.
    wait_for_webhook = (
        f'until grep -q "PAID $ID" {terminal2.log}; do\n'
        "  if (( SECONDS > 60 )); then echo 'no webhook in terminal 2' >&2; exit 97; fi\n"
        "  sleep 0.2\n"
        "done\n"
    )
    script = f"set -euo pipefail\n{pay_block}\necho ID=$ID\n{wait_for_webhook}{look_block}"
    terminal3 = Shell("terminal3", script, env, tmp_path)
    shells.append(terminal3)
    assert terminal3.process.wait(120) == 0, terminal3.output() + terminal2.output()

    out = terminal3.output()
    (payment_id,) = re.findall(r"^ID=(\S+)$", out, flags=re.MULTILINE)
    assert '"status": "completed"' in out, out
    assert re.search(rf"payment\.completed\s+{payment_id}", out), out
    assert re.search(r"dlv_\S+\s+payment\.completed\s+sub_\S+\s+succeeded\s+1\s+204", out), out
    (delivery_id,) = re.findall(r"^(dlv_\S+): queued for re-sending$", out, flags=re.MULTILINE)

    # The re-send reaches the receiver, which verifies it and, having seen its webhook-id,
    # prints nothing more.
    def resent() -> bool:
        shown = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "watcher"), "deliveries", "show", delivery_id],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        delivery = json.loads(shown.stdout)
        return len(delivery["attempt_log"]) == 2 and delivery["status"] == "succeeded"

    wait_until(resent, timeout=60, interval=0.5, message="the redelivery")
    printed = [line for line in terminal2.output().splitlines() if "listening" not in line]
    assert printed == [f"PAID {payment_id} {{'order': '42'}}"], printed

    # The HTTP API examples, with the token terminal 1 printed and ids from the answers.
    (token,) = re.findall(r"^API token: (\S+)$", terminal1.output(), flags=re.MULTILINE)
    subscription_id = re.findall(r"sub_[0-9a-f]+", out)[0]
    ids = f"export WATCHER_API_TOKENS={token} ID={payment_id} SUB={subscription_id} "
    http = Shell("http", f"{ids}DLV={delivery_id}\n{http_block()}", env, tmp_path)
    shells.append(http)
    assert http.process.wait(60) == 0, http.output()
    answers = [json.loads(line) for line in http.output().splitlines() if line.strip()]
    assert len(answers) == 9, http.output()
    assert all("error" not in answer for answer in answers), http.output()
    created = answers[-1]["items"][0]  # the audit log names the change and its token's id
    assert (created["action"], created["target"]) == ("subscription.created", answers[0]["id"])
    assert created["actor"].startswith("tok_")


def http_block() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## HTTP API") : readme.index("### Apps and keys")]
    (block,) = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    # One answer a line: curl prints none of its own.
    return block.replace("curl -s ", "curl -s -w '\\n' ")


def test_the_readme_receiver_is_examples_receiver_py() -> None:
    """The README shows the receiver's handler; it must be the file the tests run."""
    readme = (ROOT / "README.md").read_text()
    (snippet,) = re.findall(r"```python\n(webhook = .*?)```", readme, flags=re.DOTALL)
    assert snippet in (ROOT / "examples" / "receiver.py").read_text()


def test_the_readme_apps_and_keys_block_runs_as_written(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Apps and keys") : readme.index("## Receiving webhooks")]
    (block,) = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    env = {**stack.env, "PATH": f"{Path(sys.executable).parent}:{stack.env.get('PATH', '')}"}
    ran = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.count("vwk_") == 2, ran.stdout  # the read key, the rotated one
    assert "deleted app shop (keys revoked: 1," in ran.stdout  # the other one was revoked
    keys = stack.runtime.tenants.all_keys()
    assert len(keys) == 2
    assert all(k.revoked_at is not None for k in keys)
