"""The Lua scripts are `.lua` files in one folder, registered once per client (issue 14), and
they ship in the package: a wheel without them would fail at the first poll."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import redis

from watcher.lua import USES, Scripts, scripts_for, source

ROOT = Path(__file__).resolve().parent.parent
LUA_DIR = ROOT / "watcher" / "lua"


def test_no_python_module_holds_lua() -> None:
    holders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "watcher").rglob("*.py")
        if "redis.call(" in path.read_text(encoding="utf-8")
    ]
    assert holders == []


def test_every_lua_file_is_a_registered_script_and_back() -> None:
    files = {path.stem for path in LUA_DIR.glob("*.lua")}
    libraries = {name for name in files if name.endswith("_lib")}
    assert files - libraries == {f.name for f in dataclasses.fields(Scripts)}
    assert all("redis.call(" in source(name) for name in files)
    used = {
        line.removeprefix(USES).strip()
        for name in files - libraries
        if (line := (LUA_DIR / f"{name}.lua").read_text().partition("\n")[0]).startswith(USES)
    }
    assert used == libraries, "a library no script uses, or a script using a missing one"
    assert source("begin_attempt").startswith(source("begin_attempt_lib"))


def test_scripts_are_registered_once_per_client_and_load_in_redis(
    redis_client: redis.Redis,
) -> None:
    scripts = scripts_for(redis_client)
    assert scripts_for(redis_client) is scripts
    other = redis.Redis(connection_pool=redis_client.connection_pool)
    assert scripts_for(other) is not scripts
    for field in dataclasses.fields(Scripts):
        script = getattr(scripts, field.name)
        # SCRIPT LOAD compiles it: a syntax error in a .lua file fails here, not at a poll.
        assert redis_client.script_load(script.script) == script.sha


@pytest.mark.timeout(300)
def test_the_wheel_carries_the_lua_files(tmp_path: Path) -> None:
    # Built from a copy: a build/ left in the checkout would be stale for the next build.
    source_tree = tmp_path / "src"
    shutil.copytree(
        ROOT,
        source_tree,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "data", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
        ),
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path),
            str(source_tree),
        ],
        check=True,
        capture_output=True,
        timeout=280,
    )
    (wheel,) = tmp_path.glob("voltage_watcher-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"watcher/lua/{path.name}" for path in LUA_DIR.glob("*.lua")}
    assert expected <= names, sorted(expected - names)
