"""The deploy files: every file under deploy/ parses, and everything they run or set exists.

Every command line found anywhere (Procfile, compose `command` and healthchecks, Kubernetes
`command`/`args`, systemd `ExecStart`, the Dockerfile and its entrypoint's role shortcuts, the
commands in docs/operations.md) is resolved against the real programs: `watcher <sub>` must be
a registered click command, `celery -A watcher <sub>` a celery subcommand, every option one
that command accepts (checked in-process on the click objects, and once more in the real
`--help` output of the installed scripts). Environment variable names must be settings the app
knows. The systemd units go through `systemd-analyze verify` and `systemctl --root enable`, the
Kubernetes manifests through the schemas `kubernetes-validate` bundles, `deploy/sentinel.conf`
through three real sentinels and the documented `rediss://` URL through a real TLS redis-server.
No network, no Docker: private redis-servers on loopback only. Without systemd-analyze,
systemctl or openssl their tests skip on a developer's machine but fail under CI (CI=true), so
CI cannot skip them silently; promtool and nft checks skip wherever the tool is missing.
"""

from __future__ import annotations

import asyncio
import configparser
import copy
import importlib.metadata
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import pytest
import redis
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support import clean_env, wait_until
from watcher.redis_server import RedisServer, find_redis_server, free_port
from watcher.runtime import redis_from_settings, sentinel_hosts
from watcher.settings import ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
SYSTEMD = DEPLOY / "systemd"
K8S = DEPLOY / "k8s"
OPERATIONS = ROOT / "docs" / "operations.md"
VENV_BIN = Path(sys.executable).parent

INSTALL_PREFIX = "/opt/voltage-watcher/.venv/bin/"
DATA_DIR = "/var/lib/voltage-watcher"
ROLES = ("api", "worker", "beat", "flower")

# Variables deploy files may set that are not watcher settings, and why.
DEPLOY_ONLY_VARIABLES = {
    "PORT": "the API's port in the Procfile and the image's `api` shortcut",
    "FLOWER_PORT": "Flower's port in the Procfile and the image's `flower` shortcut",
    "WORKER_ARGS": "extra celery worker options of one systemd worker instance",
}
IMAGE_VARIABLES = {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}
BUILD_VARIABLES = {"PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK"}
# Programs other than the watcher's own that deploy files may run (the Redis container).
FOREIGN_PROGRAMS = {"redis-server", "redis-cli", "grep"}

SETTING_NAMES = {name.upper() for name in Settings.model_fields}
VALID_SECRETS = {
    "VOLTAGE_API_KEY": "test-voltage-key",
    "WATCHER_API_TOKENS": "a-token-of-sufficient-length",
    "WATCHER_FLOWER_BASIC_AUTH": "operator:flower-password",
    "WATCHER_REDIS_URL": "redis://:secret@127.0.0.1:6379/0",
}


# --- reading the files ------------------------------------------------------------------------


def deploy_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file())


def yaml_docs(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def compose() -> dict[str, Any]:
    (doc,) = yaml_docs(DEPLOY / "docker-compose.yml")
    assert isinstance(doc, dict)
    return doc


def k8s_objects() -> list[tuple[Path, dict[str, Any]]]:
    objects = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml_docs(path):
            assert isinstance(doc, dict), f"{path.name}: a document is not a mapping"
            objects.append((path, doc))
    return objects


def k8s_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in k8s_objects() if doc["kind"] == kind]


def deployment(component: str) -> dict[str, Any]:
    (found,) = [
        d
        for d in k8s_kind("Deployment")
        if d["metadata"]["labels"].get("app.kubernetes.io/component") == component
    ]
    return found


def unit_entries(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A systemd unit as {section: [(key, value), ...]}, keeping repeated keys in order."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path, encoding="utf-8")
    assert parser.sections(), f"{path.name}: no sections"
    entries: dict[str, list[tuple[str, str]]] = {}
    section = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            entries.setdefault(section, [])
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not key=value: {line!r}"
        entries[section].append((key.strip(), value.strip()))
    assert set(entries) == set(parser.sections())
    return entries


def unit_values(path: Path, section: str, key: str) -> list[str]:
    return [v for k, v in unit_entries(path).get(section, []) if k == key]


def unit_value(path: Path, section: str, key: str) -> str:
    values = unit_values(path, section, key)
    assert len(values) == 1, f"{path.name}: [{section}] {key}= is set {len(values)} times"
    return values[0]


def env_file(path: Path) -> dict[str, str]:
    values = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=value: {line!r}"
            values[key] = value
    return values


def required_tool(name: str) -> str:
    """The path of a system tool a test needs: skipped where it is missing, failed under CI."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed, and CI must run this check")
        pytest.skip(f"{name} is not installed")
    return path


def operations_blocks() -> list[str]:
    """The fenced code blocks of docs/operations.md, each as its text."""
    blocks: list[str] = []
    current: list[str] | None = None
    for line in OPERATIONS.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            if current is not None:
                blocks.append("\n".join(current))
            current = None if current is not None else []
        elif current is not None:
            current.append(line)
    return blocks


def operations_block(first_line: str) -> str:
    """The one code block of docs/operations.md that starts with `first_line`."""
    found = [b for b in operations_blocks() if b.startswith(first_line)]
    assert len(found) == 1, f"docs/operations.md: {len(found)} blocks start with {first_line!r}"
    return found[0]


def three_machine_env() -> dict[str, str]:
    """The worked example's /etc/voltage-watcher/env, unquoted as systemd reads it."""
    values = {}
    for line in operations_block("# /etc/voltage-watcher/env on wm1, wm2 and wm3").splitlines():
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"not KEY=value: {line!r}"
            values[key] = shlex.split(value)[0] if value else ""
    return values


def sentinel_directives() -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for raw in (DEPLOY / "sentinel.conf").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            words = shlex.split(line)
            key = " ".join(words[:2]) if words[0] == "sentinel" else words[0]
            rest = words[2:] if words[0] == "sentinel" else words[1:]
            directives.setdefault(key, []).append(" ".join(rest))
    return directives


@dataclass
class Instruction:
    keyword: str
    rest: str


def dockerfile_instructions(path: Path) -> list[Instruction]:
    instructions = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.rstrip()
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        instructions.append(Instruction(keyword.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return instructions


def exec_form(rest: str) -> list[str]:
    """CMD/ENTRYPOINT/HEALTHCHECK CMD in JSON (exec) form."""
    value = yaml.safe_load(rest)
    assert isinstance(value, list), f"not the exec (JSON) form: {rest}"
    return [str(v) for v in value]


def entrypoint_shortcuts() -> dict[str, list[str]]:
    """The role shortcuts of docker-entrypoint.sh: `role)` followed by `set -- argv "$@"`."""
    shortcuts: dict[str, list[str]] = {}
    role = None
    for raw in (DEPLOY / "docker-entrypoint.sh").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        label = re.fullmatch(r"([a-z]+)\)", line)
        if label:
            role = label.group(1)
        elif role and line.startswith("set -- "):
            argv = shlex.split(line)[2:]
            assert argv[-1] == "$@", f"shortcut {role} drops the extra arguments"
            shortcuts[role] = argv[:-1]
            role = None
    return shortcuts


# --- resolving command lines ------------------------------------------------------------------


@dataclass
class Invocation:
    """One resolved run of the watcher's own programs: which (sub)command, which options."""

    where: str
    program: str  # "watcher" or "celery"
    path: tuple[str, ...]  # subcommand path, e.g. ("api",) or ("worker",); () for --version
    options: list[str] = field(default_factory=list)  # of the (sub)command, as written
    group_options: list[str] = field(default_factory=list)  # before the subcommand (-A)
    values: dict[str, list[str]] = field(default_factory=dict)  # option -> values given


def _watcher_cli() -> click.Group:
    from watcher.cli import cli

    return cli


def _celery_cli() -> click.Group:
    from celery.bin.celery import celery as celery_cli

    return celery_cli


def _option_names(command: click.Command) -> dict[str, click.Parameter]:
    names: dict[str, click.Parameter] = {"--help": click.Option(["--help"], is_flag=True)}
    for param in command.params:
        if isinstance(param, click.Option):
            for name in (*param.opts, *param.secondary_opts):
                names[name] = param
    return names


def _takes_value(param: click.Parameter) -> bool:
    return not (isinstance(param, click.Option) and (param.is_flag or param.count))


def _walk_click(root: click.Group, args: list[str], where: str, program: str) -> Invocation:
    """Follow `args` through the click command tree; every option must be one it accepts."""
    command: click.Command = root
    path: list[str] = []
    invocation = Invocation(where, program, ())
    i = 0
    while i < len(args):
        token = args[i]
        i += 1
        if token.startswith("-") and token != "-":
            name, has_value, value = token.partition("=")
            if program == "celery" and command.name == "flower":
                from flower.options import options as flower_options  # tornado options

                assert name.lstrip("-") in flower_options, f"{where}: flower has no {name}"
                continue
            known = _option_names(command)
            assert name in known, (
                f"{where}: `{program} {' '.join(path)}` has no option {name} "
                f"(it has {sorted(known)})"
            )
            if not has_value and _takes_value(known[name]):
                assert i < len(args), f"{where}: {name} needs a value"
                value, i = args[i], i + 1
            if has_value or _takes_value(known[name]):
                invocation.values.setdefault(name, []).append(value)
            (invocation.options if path else invocation.group_options).append(name)
        elif isinstance(command, click.Group):
            sub = command.commands.get(token)
            assert sub is not None, (
                f"{where}: `{program} {' '.join([*path, token])}` is not a command "
                f"(there are {sorted(command.commands)})"
            )
            command = sub
            path.append(token)
        # else: a positional argument of the command (e.g. `inspect ping`)
    if not path:
        assert {"--version", "--help"} & set(invocation.group_options), (
            f"{where}: `{program}` without a subcommand"
        )
    invocation.path = tuple(path)
    return invocation


def _split_shell(words: list[str]) -> Iterator[list[str]]:
    part: list[str] = []
    for word in words:
        if word in {"|", "||", "&&", ";"}:
            if part:
                yield part
            part = []
        else:
            part.append(word)
    if part:
        yield part


def resolve(argv: list[str], where: str) -> list[Invocation]:
    """Resolve one command line (or a small shell pipeline); fail on anything unknown."""
    if not argv:
        raise AssertionError(f"{where}: empty command")
    if argv[0] == "exec":
        return resolve(argv[1:], where)
    program = Path(argv[0]).name
    if program in {"sh", "bash"} and argv[1:2] == ["-c"]:
        found: list[Invocation] = []
        for part in _split_shell(shlex.split(argv[2])):
            found += resolve(part, where)
        return found
    if program.startswith("python"):
        if argv[1:2] == ["-c"]:
            compile(argv[2], where, "exec")
            return []
        assert argv[1:2] == ["-m"], f"{where}: python runs neither -c nor -m: {argv}"
        return resolve([argv[2], *argv[3:]], where)
    if argv[0].startswith("/"):
        assert argv[0].startswith(INSTALL_PREFIX), f"{where}: not from the install venv: {argv[0]}"
    if program == "watcher":
        return [_walk_click(_watcher_cli(), argv[1:], where, "watcher")]
    if program == "celery":
        invocation = _walk_click(_celery_cli(), argv[1:], where, "celery")
        apps = invocation.values.get("-A", []) + invocation.values.get("--app", [])
        if invocation.path:
            assert apps == ["watcher"], f"{where}: celery must run with -A watcher, got {apps}"
        return [invocation]
    assert program in FOREIGN_PROGRAMS, f"{where}: unknown program {argv[0]!r}"
    return []


def systemd_specifiers(text: str, instance: str) -> str:
    for spec, value in {"%i": instance, "%I": instance, "%H": "host", "%%": "%"}.items():
        text = text.replace(spec, value)
    return text


def systemd_argv(exec_start: str, env: dict[str, str], instance: str = "1") -> list[str]:
    words = shlex.split(systemd_specifiers(exec_start.lstrip("-@:+!"), instance))
    argv: list[str] = []
    for word in words:
        whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if whole:
            argv += env.get(whole.group(1), "").split()  # unbraced: split, maybe to nothing
        else:
            argv.append(
                re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), word)
            )
    return argv


def unit_environment(path: Path) -> dict[str, str]:
    env = {}
    for assignment in unit_values(path, "Service", "Environment"):
        for item in shlex.split(assignment):
            key, _, value = item.partition("=")
            env[key] = value
    return env


def worker_instance_files() -> dict[str, Path]:
    return {
        p.name.removeprefix("worker-").removesuffix(".env"): p for p in SYSTEMD.glob("worker-*.env")
    }


def compose_argv(value: Any) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def healthcheck_argv(test: list[str] | str) -> list[str]:
    if isinstance(test, str):
        return ["sh", "-c", test]
    kind, *rest = test
    if kind == "CMD":
        return rest
    assert kind == "CMD-SHELL", f"healthcheck test kind {kind!r}"
    return ["sh", "-c", " ".join(rest)]


def container_argv(container: dict[str, Any]) -> list[str]:
    """What a container runs: its command, or the image's entrypoint with its args."""
    if "command" in container:
        return [*container["command"], *container.get("args", [])]
    args = [str(a) for a in container.get("args", [])]
    shortcut = entrypoint_shortcuts().get(args[0]) if args else None
    return [*shortcut, *args[1:]] if shortcut else args


def operations_commands() -> list[list[str]]:
    """Command lines in docs/operations.md code blocks that run the watcher's programs."""
    commands = []
    in_block = False
    text = OPERATIONS.read_text(encoding="utf-8").replace("\\\n", " ")
    for raw in text.splitlines():
        if raw.startswith("```"):
            in_block = not in_block
            continue
        line = raw.strip()
        if not in_block or line.startswith("#"):
            continue
        line = re.sub(r"^(?:sudo -u \S+ |ExecStart=)", "", line)
        if line and Path(line.split()[0]).name in {"watcher", "celery"}:
            commands.append(shlex.split(line, comments=True))
    return commands


def all_command_lines() -> list[tuple[str, list[str]]]:
    """(where, argv) for every command line in the Procfile, deploy/ and docs/operations.md."""
    lines: list[tuple[str, list[str]]] = []
    for raw in (ROOT / "Procfile").read_text(encoding="utf-8").splitlines():
        if raw.strip() and not raw.startswith("#"):
            role, _, command = raw.partition(":")
            lines.append((f"Procfile {role}", shlex.split(command)))
    for name, service in compose()["services"].items():
        if "command" in service:
            lines.append((f"compose {name}", compose_argv(service["command"])))
        check = service.get("healthcheck", {})
        if "test" in check:
            lines.append((f"compose {name} healthcheck", healthcheck_argv(check["test"])))
    for path, doc in k8s_objects():
        if doc["kind"] != "Deployment":
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            where = f"{path.name} {container['name']}"
            lines.append((where, container_argv(container)))
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                command = container.get(probe, {}).get("exec", {}).get("command")
                if command:
                    lines.append((f"{where} {probe}", command))
    for unit in sorted(SYSTEMD.glob("*.service")):
        env = unit_environment(unit)
        for exec_start in unit_values(unit, "Service", "ExecStart"):
            lines.append((unit.name, systemd_argv(exec_start, env)))
            for instance, path in worker_instance_files().items():
                if "@" in unit.name:
                    instance_env = {**env, **env_file(path)}
                    where = f"{unit.name} with {path.name}"
                    lines.append((where, systemd_argv(exec_start, instance_env, instance)))
    for instruction in dockerfile_instructions(DEPLOY / "Dockerfile"):
        if instruction.keyword == "RUN":
            for part in _split_shell(shlex.split(instruction.rest)):
                if Path(part[0]).name in {"watcher", "celery"}:
                    lines.append(("Dockerfile RUN", part))
        elif instruction.keyword == "HEALTHCHECK":
            _, _, cmd = instruction.rest.partition("CMD ")
            lines.append(("Dockerfile HEALTHCHECK", exec_form(cmd)))
        elif instruction.keyword == "CMD":
            lines.append(("Dockerfile CMD", container_argv({"args": exec_form(instruction.rest)})))
    for role, argv in entrypoint_shortcuts().items():
        lines.append((f"docker-entrypoint.sh {role}", argv))
    for argv in operations_commands():
        lines.append(("docs/operations.md", argv))
    return lines


def invocations() -> list[Invocation]:
    found: list[Invocation] = []
    for where, argv in all_command_lines():
        found += resolve(argv, where)
    return found


def role_of(argv: list[str]) -> tuple[str, ...]:
    """("watcher", "api"), ("celery", "worker"), ... for a command line."""
    (invocation,) = resolve(argv, "role")
    return (invocation.program, *invocation.path)


EXPECTED_ROLES = {
    "api": ("watcher", "api"),
    "worker": ("celery", "worker"),
    "beat": ("celery", "beat"),
    "flower": ("watcher", "flower"),
}


def task_time_limit() -> float:
    from watcher.celery import celery_config

    return float(celery_config(load_settings(_env_file=None))["task_time_limit"])


def all_queues() -> tuple[str, ...]:
    from watcher.celery import ALL_QUEUES

    return ALL_QUEUES


def scrubbed_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("WATCHER_", "VOLTAGE_")):
            monkeypatch.delenv(name)


# --- every file parses, every command exists --------------------------------------------------


def test_every_file_under_deploy_is_one_the_tests_read() -> None:
    known = {
        "docker-compose.yml",
        "prometheus.yml",
        "prometheus-alerts.yml",
        "prometheus-alerts.test.yml",
        "redis.conf",
        "Dockerfile",
        "Dockerfile.dockerignore",
        "docker-entrypoint.sh",
        "sentinel.conf",
    }
    for path in deploy_files():
        relative = path.relative_to(DEPLOY)
        if relative.parts[0] == "k8s":
            assert path.suffix == ".yaml", relative
            yaml_docs(path)
        elif relative.parts[0] == "systemd":
            assert path.suffix in {".service", ".target", ".conf", ".env"}, relative
            if path.suffix in {".service", ".target"}:
                unit_entries(path)
            elif path.suffix == ".env":
                env_file(path)
        else:
            assert path.name in known, f"deploy/{relative}: a file no test reads"
            if path.suffix in {".yml", ".yaml"}:
                yaml_docs(path)


def test_every_command_line_resolves_to_a_real_command() -> None:
    lines = all_command_lines()
    wheres = {where.split()[0] for where, _ in lines}
    assert {"Procfile", "compose", "Dockerfile", "docs/operations.md"} <= wheres
    assert any(w.endswith(".service") for w in wheres)
    assert any(w.endswith(".yaml") for w in wheres)
    found = invocations()
    assert {(i.program, *i.path) for i in found} >= set(EXPECTED_ROLES.values())
    queues = set(all_queues())
    for invocation in found:
        for value in invocation.values.get("-Q", []) + invocation.values.get("--queues", []):
            unknown = set(value.split(",")) - queues
            assert not unknown, f"{invocation.where}: unknown queues {unknown}"
        assert "-B" not in invocation.options, f"{invocation.where}: a worker with embedded beat"
        assert "--beat" not in invocation.options, f"{invocation.where}: embedded beat"


def test_the_resolver_rejects_what_does_not_exist() -> None:
    for argv in (
        ["watcher", "apii"],
        ["watcher", "api", "--workers", "4"],
        ["celery", "-A", "watcher", "wroker"],
        ["celery", "-A", "watcher", "worker", "--queue", "watcher.poll"],
        ["celery", "-A", "other", "worker"],
        ["gunicorn", "watcher.api.app"],
        ["/usr/local/bin/watcher", "api"],
    ):
        with pytest.raises(AssertionError):
            resolve(argv, "negative")


def test_console_scripts_and_celery_plugins_are_installed() -> None:
    scripts = {e.name: e for e in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts["watcher"].value == "watcher.cli:main"
    assert "celery" in scripts
    for name in ("watcher", "celery"):
        assert (VENV_BIN / name).exists(), f"{VENV_BIN / name} (the venv's console script)"
    plugins = {e.name for e in importlib.metadata.entry_points(group="celery.commands")}
    assert "flower" in plugins  # `watcher flower` execs `celery -A watcher flower`
    assert "flower" in _celery_cli().commands
    assert {"worker", "beat", "inspect"} <= set(_celery_cli().commands)


def test_options_appear_in_the_real_help_of_the_installed_commands(tmp_path: Path) -> None:
    """The same options, checked once more against `--help` of the real programs."""
    wanted: dict[tuple[str, ...], set[str]] = {}
    for invocation in invocations():
        key = (invocation.program, *invocation.path)
        wanted.setdefault(key, set()).update(invocation.options)
        if invocation.group_options:
            wanted.setdefault((invocation.program,), set()).update(invocation.group_options)
    env = clean_env(WATCHER_REDIS_URL="redis://127.0.0.1:1/0")  # --help connects to nothing
    processes = {}
    for key in wanted:
        program, *path = key
        argv = (
            [str(VENV_BIN / "watcher"), *path, "--help"]
            if program == "watcher"
            else [sys.executable, "-m", "celery", "-A", "watcher", *path, "--help"]
        )
        processes[key] = subprocess.Popen(
            argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
    for key, process in processes.items():
        output, _ = process.communicate(timeout=60)
        text = output.decode()
        assert process.returncode == 0, f"{' '.join(key)} --help failed:\n{text}"
        for option in wanted[key] - {"--help"}:
            assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text), (
                f"`{' '.join(key)} --help` does not mention {option}"
            )


def test_every_role_runs_the_same_command_everywhere() -> None:
    procfile = {}
    for raw in (ROOT / "Procfile").read_text(encoding="utf-8").splitlines():
        role, _, command = raw.partition(":")
        procfile[role.strip()] = role_of(shlex.split(command))
    assert procfile == EXPECTED_ROLES
    services = compose()["services"]
    shortcuts = entrypoint_shortcuts()
    units = {
        "api": SYSTEMD / "voltage-watcher-api.service",
        "worker": SYSTEMD / "voltage-watcher-worker@.service",
        "beat": SYSTEMD / "voltage-watcher-beat.service",
        "flower": SYSTEMD / "voltage-watcher-flower.service",
    }
    for role, expected in EXPECTED_ROLES.items():
        assert role_of(compose_argv(services[role]["command"])) == expected, f"compose {role}"
        argv = container_argv(deployment(role)["spec"]["template"]["spec"]["containers"][0])
        assert role_of(argv) == expected, f"k8s {role}"
        exec_start = unit_value(units[role], "Service", "ExecStart")
        assert role_of(systemd_argv(exec_start, unit_environment(units[role]))) == expected
        assert role_of(shortcuts[role]) == expected, f"docker-entrypoint.sh {role}"


# --- environment variables --------------------------------------------------------------------


def test_environment_names_are_settings_the_app_knows() -> None:
    allowed = SETTING_NAMES | set(DEPLOY_ONLY_VARIABLES)
    checked: dict[str, set[str]] = {}
    for name, service in compose()["services"].items():
        if name != "redis":
            checked[f"compose {name}"] = set(service.get("environment", {}))
    for kind in ("ConfigMap", "Secret"):
        for doc in k8s_kind(kind):
            checked[f"k8s {kind}"] = set(doc.get("data", {})) | set(doc.get("stringData", {}))
    for unit in sorted(SYSTEMD.glob("*.service")):
        checked[unit.name] = set(unit_environment(unit))
    for path in SYSTEMD.glob("*.env"):
        checked[path.name] = set(env_file(path))
    for where, names in checked.items():
        unknown = names - allowed
        assert not unknown, f"{where}: {sorted(unknown)} are not watcher settings"
    for instruction in dockerfile_instructions(DEPLOY / "Dockerfile"):
        if instruction.keyword in {"ENV", "ARG"}:
            names = set(re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", instruction.rest))
            unknown = names - SETTING_NAMES - IMAGE_VARIABLES - BUILD_VARIABLES
            assert not unknown, f"Dockerfile {instruction.keyword}: {sorted(unknown)}"


def test_every_watcher_variable_mentioned_anywhere_exists() -> None:
    """A typo like WATCHER_REDIS_URI in a comment or a doc is caught too."""
    texts = {p: p.read_text(encoding="utf-8") for p in deploy_files()}
    texts[ROOT / "Procfile"] = (ROOT / "Procfile").read_text(encoding="utf-8")
    texts[OPERATIONS] = OPERATIONS.read_text(encoding="utf-8")
    for path, text in texts.items():
        names = set(re.findall(r"\b(?:WATCHER|VOLTAGE)_[A-Z0-9_]*[A-Z0-9]\b", text))
        unknown = names - SETTING_NAMES
        assert not unknown, f"{path.relative_to(ROOT)}: unknown settings {sorted(unknown)}"


def test_deploy_settings_are_valid_values(monkeypatch: pytest.MonkeyPatch) -> None:
    scrubbed_env(monkeypatch)
    monkeypatch.chdir(DEPLOY)  # no .env here
    (config,) = k8s_kind("ConfigMap")
    load_settings(_env_file=None, **{k.lower(): v for k, v in config["data"].items()})
    for unit in service_units():
        unit_env = unit_environment(unit)
        load_settings(_env_file=None, **{k.lower(): v for k, v in unit_env.items()})
    image_env = {}
    for instruction in dockerfile_instructions(DEPLOY / "Dockerfile"):
        if instruction.keyword == "ENV":
            image_env.update(dict(re.findall(r"(WATCHER_\w+|VOLTAGE_\w+)=(\S+)", instruction.rest)))
    assert image_env["WATCHER_DATA_DIR"] == DATA_DIR
    load_settings(_env_file=None, **{k.lower(): v for k, v in image_env.items()})
    environment = {
        k: v.replace("${REDIS_PASSWORD:?set REDIS_PASSWORD (see the top of this file)}", "pw")
        for k, v in compose()["services"]["api"]["environment"].items()
    }
    settings = load_settings(_env_file=None, **{k.lower(): v for k, v in environment.items()})
    assert settings.watcher_redis_url == "redis://:pw@redis:6379/0"


def test_the_secret_template_holds_only_placeholders_that_cannot_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scrubbed_env(monkeypatch)
    text = (K8S / "secret.yaml").read_text(encoding="utf-8")
    assert "TEMPLATE" in text
    assert "PLACEHOLDER" in text
    (secret,) = k8s_kind("Secret")
    values = secret["stringData"]
    assert "data" not in secret  # nothing base64-encoded hiding a real value
    for key, value in values.items():
        assert value == "" or "CHANGE-ME" in value, f"{key} is not a placeholder"
    (config,) = k8s_kind("ConfigMap")
    merged = {k.lower(): v for k, v in {**config["data"], **values}.items()}
    with pytest.raises(ConfigError, match="WATCHER_API_TOKENS") as failure:
        load_settings(_env_file=None, **merged)
    assert "WATCHER_FLOWER_BASIC_AUTH" in str(failure.value)
    real = {**merged, **{k.lower(): v for k, v in VALID_SECRETS.items()}}
    load_settings(_env_file=None, **real)


# --- docker compose ---------------------------------------------------------------------------


def test_compose_services_and_exactly_one_beat() -> None:
    doc = compose()
    services = doc["services"]
    assert set(services) == {"redis", *ROLES}
    beats = [
        name
        for name, s in services.items()
        if "command" in s and name != "redis" and role_of(compose_argv(s["command"]))[-1] == "beat"
    ]
    assert beats == ["beat"]
    assert services["beat"].get("deploy", {}).get("replicas", 1) == 1
    worker = services["worker"]
    assert worker["deploy"]["replicas"] >= 1
    assert "container_name" not in worker  # `--scale worker=N` needs generated names
    assert "ports" not in worker
    assert "--scale worker=N" in (DEPLOY / "docker-compose.yml").read_text(encoding="utf-8")
    limit = task_time_limit()
    grace = re.fullmatch(r"(\d+)m", worker["stop_grace_period"])
    assert grace
    assert int(grace.group(1)) * 60 >= limit
    assert worker.get("stop_signal", "SIGTERM") == "SIGTERM"


def test_compose_watcher_services_share_redis_env_and_healthchecks() -> None:
    doc = compose()
    build = doc["services"]["api"]["build"]
    context = (DEPLOY / build["context"]).resolve()
    assert context == ROOT
    assert (context / build["dockerfile"]).is_file()
    for name in ROLES:
        service = doc["services"][name]
        assert service["env_file"] == ["../.env"], name
        assert (DEPLOY / "../.env.example").is_file()  # the template of that .env
        assert service["depends_on"]["redis"]["condition"] == "service_healthy", name
        url = service["environment"]["WATCHER_REDIS_URL"]
        assert url.startswith("redis://:${REDIS_PASSWORD")
        assert url.endswith("@redis:6379/0")
        check = service["healthcheck"]
        if name == "beat":
            assert check == {"disable": True}  # explained in the file; alert on ticks instead
        else:
            assert check["test"], name
        assert service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
    api_check = " ".join(doc["services"]["api"]["healthcheck"]["test"])
    assert "/healthz" in api_check
    assert "/healthcheck" in " ".join(doc["services"]["flower"]["healthcheck"]["test"])
    published = {p.split(":")[0] for n in ROLES for p in doc["services"][n].get("ports", [])}
    assert published == {"127.0.0.1"}  # API and Flower on loopback only


def test_compose_redis_runs_the_repo_config_with_aof_and_noeviction() -> None:
    redis_service = compose()["services"]["redis"]
    argv = compose_argv(redis_service["command"])
    assert argv[:2] == ["redis-server", "/usr/local/etc/redis/redis.conf"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in redis_service["volumes"]}
    host = mounts["/usr/local/etc/redis/redis.conf"]
    assert (DEPLOY / host).resolve() == DEPLOY / "redis.conf"
    assert "ports" not in redis_service
    assert "--requirepass" in argv
    assert "redis-cli ping" in redis_service["healthcheck"]["test"][1]
    interpolated = set(
        re.findall(r"\$\{([A-Z_]+)", (DEPLOY / "docker-compose.yml").read_text(encoding="utf-8"))
    )
    assert interpolated == {"REDIS_PASSWORD"}
    assert "REDIS_PASSWORD" in OPERATIONS.read_text(encoding="utf-8")


# --- redis.conf -------------------------------------------------------------------------------


def redis_directives() -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for raw in (DEPLOY / "redis.conf").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition(" ")
            directives.setdefault(name.lower(), []).append(value.strip())
    return directives


def test_redis_conf_is_durable_and_never_evicts() -> None:
    d = redis_directives()
    assert d["appendonly"] == ["yes"]
    assert d["appendfsync"] == ["always"]
    assert d["maxmemory-policy"] == ["noeviction"]
    assert d["hash-max-listpack-value"] == ["1024"]
    assert d["aof-use-rdb-preamble"] == ["yes"]
    assert d["save"] == ['""']  # no RDB snapshot schedule to rely on
    assert d["protected-mode"] == ["yes"]
    assert "requirepass" not in d  # a template: the password is set per installation


def test_redis_conf_loads_in_a_real_redis_server_with_the_compose_overrides(
    tmp_path: Path,
) -> None:
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    overrides = compose_argv(compose()["services"]["redis"]["command"])[2:]
    values = {"--bind": "127.0.0.1", "--dir": str(tmp_path), "--requirepass": "test-password"}
    argv = [server, str(DEPLOY / "redis.conf")]
    for option, value in zip(overrides[::2], overrides[1::2], strict=True):
        assert option in values, f"compose passes redis-server {option} {value}"
        argv += [option, values[option]]
    port = free_port()
    argv += ["--port", str(port), "--logfile", str(tmp_path / "redis.log")]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(
        port=port, password="test-password", socket_timeout=2, decode_responses=True
    )
    try:

        def answers() -> bool:
            assert process.poll() is None, (tmp_path / "redis.log").read_text()
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_until(answers, timeout=10, message="redis-server with deploy/redis.conf")
        config = client.config_get("*")
        assert config["appendonly"] == "yes"
        assert config["appendfsync"] == "always"
        assert config["maxmemory-policy"] == "noeviction"
        assert config["hash-max-listpack-value"] == "1024"
        assert config["aof-use-rdb-preamble"] == "yes"
        assert config["save"] == ""
        assert int(config["maxmemory"]) > 0
        assert (tmp_path / "appendonlydir").is_dir()
    finally:
        client.close()
        process.terminate()
        process.wait(10)


# --- the three-machine example: env file, Sentinel, firewall; Redis TLS -----------------------

SENTINEL_TEST_PASSWORD = "sentinel-test-password-0123"


def test_the_three_machine_env_file_is_valid_and_names_the_three_sentinels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scrubbed_env(monkeypatch)
    monkeypatch.chdir(DEPLOY)  # no .env here
    env = three_machine_env()
    with pytest.raises(ConfigError, match="WATCHER_API_TOKENS"):  # a forgotten placeholder
        load_settings(_env_file=None, **{k.lower(): v for k, v in env.items()})
    secrets = {k: v for k, v in VALID_SECRETS.items() if k != "WATCHER_REDIS_URL"}
    values = {k.lower(): v for k, v in {**env, **secrets}.items()}
    settings = load_settings(_env_file=None, **values)
    hosts, options = sentinel_hosts(settings.watcher_redis_url or "")
    sentinel = sentinel_directives()
    (port,) = sentinel["port"]
    assert hosts == [(f"10.0.0.{n}", int(port)) for n in (1, 2, 3)]
    assert options == {"password": "CHANGE-ME", "db": 0}
    assert settings.watcher_redis_min_replicas >= 1
    (monitor,) = sentinel["sentinel monitor"]
    name, address, redis_port, quorum = monitor.split()
    assert name == settings.watcher_redis_sentinel_master
    assert (address, redis_port) == ("10.0.0.1", "6379")  # wm1, the master at first
    assert int(quorum) == len(hosts) // 2 + 1  # a majority of the three
    assert sentinel["sentinel auth-pass"] == [f"{name} CHANGE-ME"]


def start_sentinels(tmp_path: Path, master_port: int, count: int) -> list[int]:
    """`count` sentinels from deploy/sentinel.conf on loopback, monitoring the master there."""
    template = (DEPLOY / "sentinel.conf").read_text(encoding="utf-8")
    ports = []
    for n in range(1, count + 1):
        port = free_port()
        text = template
        for pattern, value in {
            r"^port 26379$": f"port {port}",
            r"^bind .*$": "bind 127.0.0.1",
            r"^(sentinel monitor watched) 10\.0\.0\.1 6379 2$": rf"\1 127.0.0.1 {master_port} 2",
            r"^(sentinel auth-pass watched) CHANGE-ME$": rf"\1 {SENTINEL_TEST_PASSWORD}",
            r"^dir .*$": f"dir {tmp_path}",
            r'^logfile ""$': f'logfile "{tmp_path}/sentinel{n}.log"',
        }.items():
            text, replaced = re.subn(pattern, value, text, flags=re.MULTILINE)
            assert replaced == 1, f"deploy/sentinel.conf has no line {pattern}"
        (tmp_path / f"sentinel{n}.conf").write_text(text)
        ports.append(port)
    return ports


def test_sentinel_conf_makes_a_quorum_of_three_the_documented_url_reaches(tmp_path: Path) -> None:
    """deploy/sentinel.conf on three real sentinels over a master and two replicas (the three
    machines, on loopback ports): the quorum is reachable, and the worked example's env file,
    with its addresses swapped for those ports, reaches the master for the watcher's own client
    and for Celery's broker."""
    from celery import Celery

    from watcher.celery import celery_config

    password = SENTINEL_TEST_PASSWORD
    servers = [
        RedisServer(tmp_path / "wm1", password=password, extra_args=["--masterauth", password])
    ]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        servers[0].start()
        for n in (2, 3):
            replica_of = ["--replicaof", "127.0.0.1", str(servers[0].port)]
            servers.append(
                RedisServer(
                    tmp_path / f"wm{n}",
                    password=password,
                    extra_args=[*replica_of, "--masterauth", password],
                ).start()
            )
        master = redis.Redis(port=servers[0].port, password=password, decode_responses=True)
        wait_until(
            lambda: master.info("replication")["connected_slaves"] == 2,
            timeout=30,
            message="two replicas connected",
        )
        ports = start_sentinels(tmp_path, servers[0].port, 3)
        for n in (1, 2, 3):
            conf = str(tmp_path / f"sentinel{n}.conf")
            processes.append(
                subprocess.Popen(
                    [find_redis_server(), conf, "--sentinel"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        sentinel = redis.Redis(port=ports[0], socket_timeout=2, decode_responses=True)

        def quorum() -> str | None:
            assert all(p.poll() is None for p in processes), "a sentinel exited"
            try:
                answer = str(sentinel.execute_command("SENTINEL", "CKQUORUM", "watched"))
            except (redis.ConnectionError, redis.ResponseError):
                return None
            known = sentinel.sentinel_master("watched")
            complete = answer.startswith("OK 3 usable") and known["num-slaves"] == 2
            return answer if complete else None

        answer = wait_until(quorum, timeout=60, message="three sentinels and two replicas")
        assert answer in OPERATIONS.read_text(encoding="utf-8")  # what the docs say it prints
        known = sentinel.sentinel_master("watched")
        assert known["quorum"] == 2
        assert known["down-after-milliseconds"] == 10000
        sentinel.close()

        url = three_machine_env()["WATCHER_REDIS_URL"].replace("CHANGE-ME", password)
        for n, port in enumerate(ports, 1):
            url = url.replace(f"10.0.0.{n}:26379", f"127.0.0.1:{port}")
        assert "10.0.0." not in url
        settings = load_settings(
            _env_file=None,
            watcher_redis_url=url,
            watcher_redis_sentinel_master=three_machine_env()["WATCHER_REDIS_SENTINEL_MASTER"],
        )
        client = redis_from_settings(settings)
        try:
            assert client.set("deploytest:sentinel", "1")  # a write: the master, not a replica
            assert master.get("deploytest:sentinel") == "1"
            client.delete("deploytest:sentinel")
        finally:
            client.close()
            master.close()
        app = Celery("deploytest-sentinel", set_as_current=False)
        app.conf.update(celery_config(settings))
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=3)
            queue = connection.SimpleQueue("deploytest.sentinel")
            queue.put({"through": "sentinel"})
            message = queue.get(timeout=10)
            message.ack()
            assert message.payload == {"through": "sentinel"}
            queue.close()
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)
        for server in reversed(servers):
            server.stop()


def test_the_documented_firewall_rules_parse_and_open_the_redis_ports(tmp_path: Path) -> None:
    """The worked example's /etc/nftables.conf through `nft -c` (checks, applies nothing)."""
    block = operations_block("#!/usr/sbin/nft -f")
    (opened,) = re.findall(r'iifname "wg0" .* tcp dport \{ ([\d, ]+) \} accept', block)
    redis_port = redis_directives()["port"]
    assert set(opened.split(", ")) == {*redis_port, *sentinel_directives()["port"]}
    wm1 = block.replace("# tcp dport 443 accept", "tcp dport 443 accept")
    assert wm1 != block
    nft = shutil.which("nft")
    if nft is None or os.geteuid() != 0:
        pytest.skip("needs nft (Debian: nftables) and root")
    for name, text in {"wm1": wm1, "wm2": block}.items():
        path = tmp_path / f"{name}.nft"
        path.write_text(text + "\n")
        result = subprocess.run(
            [nft, "-c", "-f", str(path)], capture_output=True, text=True, timeout=30, check=False
        )
        assert result.returncode == 0, f"{name}: {result.stderr}"


def documented_tls_files(directory: Path) -> None:
    """The docs' openssl commands (a CA and a certificate for the address clients use), run
    for 127.0.0.1 instead of 10.0.0.1, and a second, unrelated CA under other/."""
    openssl = required_tool("openssl")
    lines = [
        line.replace("IP:10.0.0.1", "IP:127.0.0.1")
        for block in operations_blocks()
        for line in block.splitlines()
        if line.startswith(("openssl ", "printf 'subjectAltName="))
    ]
    assert len(lines) == 4, lines
    env = {**os.environ, "PATH": f"{Path(openssl).parent}:{os.environ.get('PATH', '')}"}
    for line in lines:
        subprocess.run(["sh", "-c", line], cwd=directory, env=env, check=True, timeout=60)
    (directory / "other").mkdir()
    subprocess.run(["sh", "-c", lines[0]], cwd=directory / "other", env=env, check=True, timeout=60)


def start_tls_redis(directory: Path, password: str) -> tuple[subprocess.Popen[bytes], int]:
    """A redis-server with the docs' TLS lines (their paths moved to `directory`)."""
    (block,) = [b for b in operations_blocks() if b.startswith("port 0\ntls-port ")]
    port = free_port()
    conf = block.replace("/etc/redis/tls/", f"{directory}/").replace(
        "tls-port 6379", f"tls-port {port}"
    )
    conf += (
        f'\nbind 127.0.0.1\nrequirepass {password}\nsave ""\nappendonly no\n'
        f'dir {directory}\nlogfile "{directory}/redis.log"\n'
    )
    (directory / "redis-tls.conf").write_text(conf)
    process = subprocess.Popen(
        [find_redis_server(), str(directory / "redis-tls.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(
        host="127.0.0.1",
        port=port,
        password=password,
        ssl=True,
        ssl_ca_certs=str(directory / "ca.crt"),
        socket_timeout=2,
    )

    def answers() -> bool:
        log = directory / "redis.log"
        assert process.poll() is None, log.read_text() if log.exists() else "redis-server exited"
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        wait_until(answers, timeout=15, message="redis-server with the documented TLS lines")
    except BaseException:
        process.terminate()
        process.wait(10)
        raise
    finally:
        client.close()
    return process, port


def test_the_documented_rediss_url_works_and_verifies_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rediss:// URL of docs/operations.md against a real TLS redis-server: the watcher's
    client and Celery's broker connect and check the certificate (another CA is refused);
    without ssl_ parameters kombu would not check it; Flower's queue view needs the CA in the
    system store. What the docs say, each part."""
    import ssl

    from celery import Celery
    from flower.utils.broker import Broker
    from kombu import Connection
    from kombu.exceptions import OperationalError

    from watcher.celery import celery_config

    scrubbed_env(monkeypatch)
    documented_tls_files(tmp_path)
    password = "tls-test-password-0123"
    process, port = start_tls_redis(tmp_path, password)
    try:
        (documented,) = {
            url
            for block in operations_blocks()
            for url in re.findall(r"rediss://[^'\s]+", block)
            if "ssl_cert_reqs=" in url
        }
        url = (
            documented.replace("CHANGE-ME", password)
            .replace("@10.0.0.1:6379/", f"@127.0.0.1:{port}/")
            .replace("/etc/voltage-watcher/tls/redis-ca.crt", str(tmp_path / "ca.crt"))
        )
        assert str(tmp_path) in url
        assert str(port) in url

        def connect(url: str) -> None:
            settings = load_settings(_env_file=None, watcher_redis_url=url)
            client = redis_from_settings(settings)
            try:
                assert client.ping()
            finally:
                client.close()
            app = Celery("deploytest-tls", set_as_current=False)
            app.conf.update(celery_config(settings))
            with app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, interval_start=0)
                assert connection.ssl["ssl_cert_reqs"] == ssl.CERT_REQUIRED
                queue = connection.SimpleQueue("deploytest.tls")
                queue.put({"over": "tls"})
                message = queue.get(timeout=10)
                message.ack()
                assert message.payload == {"over": "tls"}
                queue.close()

        connect(url)
        other_ca = url.replace(str(tmp_path / "ca.crt"), str(tmp_path / "other" / "ca.crt"))
        with pytest.raises((redis.ConnectionError, OperationalError)):
            connect(other_ca)
        without = url.split("?")[0]
        assert Connection(without).ssl == {"ssl_cert_reqs": ssl.CERT_NONE}  # kombu: unchecked

        broker = Broker(url, broker_options={}, broker_use_ssl=None)
        with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            asyncio.run(broker.queues(["watcher.poll"]))
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.crt"))  # = the system store
        broker = Broker(url, broker_options={}, broker_use_ssl=None)
        assert asyncio.run(broker.queues(["watcher.poll"])) == [
            {"name": "watcher.poll", "messages": 0}
        ]
    finally:
        process.terminate()
        process.wait(10)


# --- Kubernetes -------------------------------------------------------------------------------


def test_k8s_manifests_have_the_expected_objects() -> None:
    objects = k8s_objects()
    kinds = sorted(doc["kind"] for _, doc in objects)
    for kind, count in {
        "Namespace": 1,
        "ConfigMap": 1,
        "Secret": 1,
        "Deployment": 4,
        "Service": 2,
        "HorizontalPodAutoscaler": 1,
        "Kustomization": 1,
    }.items():
        assert kinds.count(kind) == count, (kind, kinds)
    (kustomization,) = k8s_kind("Kustomization")
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    namespace = kustomization["namespace"]
    for path, doc in objects:
        if doc["kind"] not in {"Kustomization", "Namespace"}:
            assert doc["metadata"]["namespace"] == namespace, (path.name, doc["kind"])
    image_names = {i["name"] for i in kustomization["images"]}
    services = {s["metadata"]["name"]: s for s in k8s_kind("Service")}
    assert {"voltage-watcher-api", "voltage-watcher-flower"} == set(services)
    for service in services.values():
        selector = service["spec"]["selector"]
        (target,) = [
            d
            for d in k8s_kind("Deployment")
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        ports = {
            p["name"]: p["containerPort"]
            for c in target["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports
    for component in ROLES:
        doc = deployment(component)
        spec = doc["spec"]
        assert (
            spec["selector"]["matchLabels"].items()
            <= spec["template"]["metadata"]["labels"].items()
        )
        pod = spec["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            assert container["image"] in image_names
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][part]), component
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["readOnlyRootFilesystem"] is True
            refs = {next(iter(source.values()))["name"] for source in container["envFrom"]}
            assert refs == {"voltage-watcher-config", "voltage-watcher-secrets"}


def test_k8s_beat_is_a_single_replica_recreated_never_scaled() -> None:
    beat = deployment("beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    targets = {h["spec"]["scaleTargetRef"]["name"] for h in k8s_kind("HorizontalPodAutoscaler")}
    assert targets == {deployment("worker")["metadata"]["name"]}
    pod = beat["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    schedule = container["args"][container["args"].index("--schedule") + 1]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert str(Path(schedule).parent) in mounts  # writable on a read-only root filesystem


def test_k8s_api_probes_health_and_readiness_on_its_port() -> None:
    (container,) = deployment("api")["spec"]["template"]["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["livenessProbe"]["httpGet"]["port"] in ports
    (invocation,) = resolve(container_argv(container), "api")
    assert [str(ports["http"])] == invocation.values["--port"]


def test_k8s_worker_grace_period_covers_the_task_time_limit() -> None:
    pod = deployment("worker")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= task_time_limit()
    (invocation,) = resolve(container_argv(pod["containers"][0]), "worker")
    assert "--concurrency" in invocation.options  # not one process per node CPU


def test_k8s_manifests_validate_against_the_kubernetes_schemas() -> None:
    """Every object against the Kubernetes JSON schemas the kubernetes-validate package bundles
    (offline), strict (an unknown or misspelt field is an error), for every version it bundles.
    The Kustomization is kustomize's own file, not an API object: no schema to check it with."""
    import kubernetes_validate
    from kubernetes_validate.utils import all_versions

    versions = sorted(set(all_versions()), key=lambda v: tuple(int(x) for x in v.split(".")))
    assert len(versions) >= 3, versions
    objects = [(path, doc) for path, doc in k8s_objects() if doc["kind"] != "Kustomization"]
    assert {doc["kind"] for _, doc in objects} >= {"Deployment", "Service", "ConfigMap", "Secret"}
    for version in versions:
        for path, doc in objects:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{path.name} {doc['kind']} on Kubernetes {version}: {exc.caught}")
    broken = copy.deepcopy(deployment("worker"))
    broken["spec"]["replica"] = broken["spec"].pop("replicas")  # the validator has teeth
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, versions[-1], strict=True)


# --- systemd ----------------------------------------------------------------------------------


def service_units() -> list[Path]:
    return sorted(SYSTEMD.glob("*.service"))


def test_systemd_units_run_the_venv_commands_hardened() -> None:
    names = {p.name for p in service_units()}
    assert names == {
        "voltage-watcher-api.service",
        "voltage-watcher-worker@.service",
        "voltage-watcher-beat.service",
        "voltage-watcher-flower.service",
    }
    (sysusers,) = [
        shlex.split(line)
        for line in (SYSTEMD / "voltage-watcher.sysusers.conf").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert sysusers[0] == "u"
    user, home = sysusers[1], sysusers[4]
    assert home == DATA_DIR
    expected = {
        "User": user,
        "Group": user,
        "Restart": "on-failure",
        "KillSignal": "SIGTERM",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "WorkingDirectory": DATA_DIR,
        "ReadWritePaths": DATA_DIR,
    }
    for unit in service_units():
        for key, value in expected.items():
            assert unit_value(unit, "Service", key) == value, (unit.name, key)
        assert unit_value(unit, "Service", "ExecStart").startswith(INSTALL_PREFIX)
        assert "/etc/voltage-watcher/env" in unit_values(unit, "Service", "EnvironmentFile")
        assert unit_environment(unit)["WATCHER_DATA_DIR"] == DATA_DIR
        assert unit_value(unit, "Install", "WantedBy") == "voltage-watcher.target"
        assert unit_value(unit, "Unit", "PartOf") == "voltage-watcher.target"
    target = unit_entries(SYSTEMD / "voltage-watcher.target")
    assert ("WantedBy", "multi-user.target") in target["Install"]


def test_systemd_worker_template_warm_shutdown_and_instances() -> None:
    worker = SYSTEMD / "voltage-watcher-worker@.service"
    assert unit_value(worker, "Service", "KillMode") == "mixed"  # SIGTERM to the main process
    assert float(unit_value(worker, "Service", "TimeoutStopSec")) >= task_time_limit()
    exec_start = unit_value(worker, "Service", "ExecStart")
    assert "%i" in exec_start  # unique node names per instance
    assert "$WORKER_ARGS" in exec_start.split()
    files = unit_values(worker, "Service", "EnvironmentFile")
    assert files[0] == "/etc/voltage-watcher/env"
    assert files[1] == "-/etc/voltage-watcher/worker-%i.env"
    instances = worker_instance_files()
    consumed: set[str] = set()
    for instance, path in instances.items():
        assert Path(systemd_specifiers(files[1][1:], instance)).name == path.name
        (invocation,) = resolve(systemd_argv(exec_start, env_file(path), instance), path.name)
        consumed |= {q for v in invocation.values["-Q"] for q in v.split(",")}
    assert consumed == set(all_queues())  # the example pools cover every queue
    (default,) = resolve(systemd_argv(exec_start, unit_environment(worker)), worker.name)
    assert "-Q" not in default.options  # without an instance file: all queues
    beat = SYSTEMD / "voltage-watcher-beat.service"
    assert "@" not in beat.name  # one beat per machine at most; docs: on one machine only
    (invocation,) = resolve(systemd_argv(unit_value(beat, "Service", "ExecStart"), {}), "beat")
    schedule = invocation.values["--schedule"][0]
    assert schedule.startswith(unit_value(beat, "Service", "ReadWritePaths") + "/")


def all_units() -> list[Path]:
    return [*service_units(), SYSTEMD / "voltage-watcher.target"]


def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    """Every unit, the worker template as each of its instances (with its instance file), and
    the target, through the real `systemd-analyze verify`."""
    analyze = required_tool("systemd-analyze")
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "env").write_text("")
    for path in worker_instance_files().values():
        shutil.copy(path, etc / path.name)
    units = []
    for path in all_units():
        text = path.read_text(encoding="utf-8").replace(INSTALL_PREFIX, f"{VENV_BIN}/")
        text = text.replace("/etc/voltage-watcher/", f"{etc}/")
        instances = sorted(worker_instance_files()) if path.name.endswith("@.service") else [""]
        for instance in instances:
            name = path.name.replace("@.service", f"@{instance}.service")
            (tmp_path / name).write_text(text)
            units.append(name)
    assert "voltage-watcher.target" in units
    assert {f"voltage-watcher-worker@{i}.service" for i in ("poll", "deliver", "control")} <= set(
        units
    )
    result = subprocess.run(
        [analyze, "verify", "--man=no", *(f"./{name}" for name in units)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if re.search(r"Unknown|Failed|ignoring|not executable|Invalid|Unit \S+ not found", line)
    ]
    assert result.returncode == 0, result.stderr
    assert not problems, problems


def documented_enables() -> list[list[str]]:
    """The voltage-watcher units of each docs/operations.md code block that runs
    `systemctl enable` on any of them (one block, one machine)."""
    machines = []
    for block in operations_blocks():
        units: list[str] = []
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            words = words[1:] if words[:1] == ["sudo"] else words
            if words[:2] == ["systemctl", "enable"]:
                units += [w for w in words[2:] if w.startswith("voltage-watcher")]
        if units:
            machines.append(units)
    return machines


def test_documented_enables_start_every_unit_at_boot_through_the_target(tmp_path: Path) -> None:
    """Each machine's `systemctl enable` of docs/operations.md, run by the real systemctl on a
    scratch root: the target lands in multi-user.target and every unit under the target."""
    systemctl = required_tool("systemctl")
    machines = documented_enables()
    assert len(machines) >= 4  # one machine, wm1, wm2/wm3, the fourth machine
    assert any("voltage-watcher-beat.service" in m for m in machines)
    for n, units in enumerate(machines):
        assert "voltage-watcher.target" in units, (
            f"docs/operations.md enables {units} without voltage-watcher.target: "
            "nothing of it would start at boot"
        )
        root = tmp_path / f"machine{n}"
        unit_dir = root / "etc" / "systemd" / "system"
        unit_dir.mkdir(parents=True)
        for path in all_units():
            shutil.copy(path, unit_dir / path.name)
        result = subprocess.run(
            [systemctl, f"--root={root}", "enable", *units],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        boot = {p.name for p in (unit_dir / "multi-user.target.wants").iterdir()}
        assert boot == {"voltage-watcher.target"}  # everything else hangs off the target
        wanted = {p.name for p in (unit_dir / "voltage-watcher.target.wants").iterdir()}
        services = {u if u.endswith(".service") else f"{u}.service" for u in units}
        assert wanted == services - {"voltage-watcher.target.service"}
        for name in wanted:  # an instance links to the template it is made from
            link = os.readlink(unit_dir / "voltage-watcher.target.wants" / name)
            assert Path(link).name == re.sub(r"@[^.]+\.service$", "@.service", name)
    for unit in service_units():  # stop/restart of the target reach every unit
        assert unit_value(unit, "Unit", "PartOf") == "voltage-watcher.target"


def test_unit_names_in_the_docs_and_units_are_real_ones() -> None:
    """One naming scheme: a worker instance is a pool with a worker-INSTANCE.env file
    (voltage-watcher-worker@poll, never @1), and every other unit name is a file here."""
    units = {p.name for p in all_units()}
    instances = set(worker_instance_files())
    texts = {OPERATIONS: OPERATIONS.read_text(encoding="utf-8")}
    texts.update({p: p.read_text(encoding="utf-8") for p in sorted(SYSTEMD.iterdir())})
    seen = set()
    for path, text in texts.items():
        where = path.relative_to(ROOT)
        for match in re.finditer(r"(?<![\w-])(?:voltage-watcher-)?worker@([\w*%-]*)", text):
            instance = match.group(1)
            assert instance in instances | {"", "*"}, (
                f"{where}: worker instance {match.group(0)!r}: use one of "
                f"{sorted(instances)} (deploy/systemd/worker-INSTANCE.env)"
            )
            seen.add(instance)
        for match in re.finditer(r"\bvoltage-watcher[\w@*.-]*\.(?:service|target)\b", text):
            name = re.sub(r"@[\w*%-]*\.service$", "@.service", match.group(0))
            assert name in units, f"{where}: {match.group(0)} is not a unit in deploy/systemd"
    assert instances <= seen  # the docs name every pool


# --- Dockerfile and entrypoint ----------------------------------------------------------------


def test_dockerfile_builds_from_python_slim_as_non_root_without_secrets() -> None:
    instructions = dockerfile_instructions(DEPLOY / "Dockerfile")
    stages = [i.rest.split()[0] for i in instructions if i.keyword == "FROM"]
    assert stages == ["python:3.11-slim", "python:3.11-slim"]
    last_from = max(n for n, i in enumerate(instructions) if i.keyword == "FROM")
    final = instructions[last_from:]
    (user,) = [i.rest for i in final if i.keyword == "USER"]
    assert user.split(":")[0] not in {"root", "0"}
    for instruction in instructions:
        if instruction.keyword in {"ENV", "ARG"}:
            assert not re.search(r"(KEY|TOKEN|SECRET|PASSWORD|AUTH)\w*=", instruction.rest)
        if instruction.keyword == "COPY" and "--from" not in instruction.rest:
            *sources, _dest = [w for w in instruction.rest.split() if not w.startswith("--")]
            for source in sources:
                assert source not in {".", "./", ".env"}, "copies the whole context"
                assert (ROOT / source).exists(), f"COPY {source}: no such file"
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    assert "**" in ignore
    assert "**/.env" in ignore
    for instruction in instructions:
        if instruction.keyword == "COPY" and "--from" not in instruction.rest:
            *sources, _ = [w for w in instruction.rest.split() if not w.startswith("--")]
            for source in sources:
                assert f"!{source}" in ignore, f"{source} is excluded from the build context"


def test_dockerfile_entrypoint_healthcheck_and_cmd() -> None:
    instructions = dockerfile_instructions(DEPLOY / "Dockerfile")
    (entrypoint,) = [exec_form(i.rest) for i in instructions if i.keyword == "ENTRYPOINT"]
    copies = {
        i.rest.split()[-1]: i.rest.split()[-2]
        for i in instructions
        if i.keyword == "COPY" and "docker-entrypoint.sh" in i.rest
    }
    (installed,) = copies
    assert Path(installed).name == entrypoint[0]
    assert "--chmod=0755" in next(i.rest for i in instructions if "docker-entrypoint" in i.rest)
    script = DEPLOY / "docker-entrypoint.sh"
    assert os.access(script, os.X_OK)
    subprocess.run(["sh", "-n", str(script)], check=True, timeout=10)
    assert set(entrypoint_shortcuts()) == set(ROLES)
    (health,) = [i.rest for i in instructions if i.keyword == "HEALTHCHECK"]
    assert "/healthz" in health
    (cmd,) = [exec_form(i.rest) for i in instructions if i.keyword == "CMD"]
    assert role_of(container_argv({"args": cmd})) == EXPECTED_ROLES["api"]
    exposed = {w for i in instructions if i.keyword == "EXPOSE" for w in i.rest.split()}
    assert exposed == {"8080", "5555"}


def test_entrypoint_runs_the_given_command_and_expands_role_shortcuts(tmp_path: Path) -> None:
    """The real script, with `id` and the programs it execs stubbed by PATH entries."""
    (tmp_path / "id").write_text('#!/bin/sh\necho "$FAKE_UID"\n')
    for name in ("watcher", "celery", "echo-args"):
        (tmp_path / name).write_text('#!/bin/sh\nprintf "%s\\n" "$(basename "$0")" "$@"\n')
    for stub in tmp_path.iterdir():
        stub.chmod(0o755)
    script = str(DEPLOY / "docker-entrypoint.sh")

    def run(*args: str, uid: str = "10001") -> subprocess.CompletedProcess[str]:
        env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "PORT": "9000", "FAKE_UID": uid}
        return subprocess.run(
            [script, *args], env=env, capture_output=True, text=True, timeout=10, check=False
        )

    assert run("worker", "-Q", "watcher.poll").stdout.splitlines() == [
        "celery", "-A", "watcher", "worker", "--loglevel", "INFO", "-Q", "watcher.poll"
    ]  # fmt: skip
    default = run().stdout.splitlines()
    assert default == ["watcher", "api", "--host", "0.0.0.0", "--port", "9000"]
    beat = run("beat").stdout.splitlines()
    assert beat[-2:] == ["--schedule", f"{DATA_DIR}/celerybeat-schedule"]
    assert run("echo-args", "x y").stdout.splitlines() == ["echo-args", "x y"]
    as_root = run("api", uid="0")
    assert as_root.returncode == 1
    assert "refusing to run as root" in as_root.stderr
    assert as_root.stdout == ""


# --- Prometheus -------------------------------------------------------------------------------


@pytest.fixture
def exposition(redis_server: RedisServer) -> dict[str, list[dict[str, str]]]:
    """What a real API's /metrics serves, with the counters the alerts use made non-zero."""
    from watcher.api.metrics import build_registry, render
    from watcher.runtime import Runtime

    settings = load_settings(
        _env_file=None, watcher_redis_url=redis_server.url, watcher_redis_prefix="deploytest"
    )
    runtime = Runtime.from_settings(settings)
    try:
        runtime.redis.delete(runtime.payments.keys.counters)
        for counter in ("voltage_errors:auth", "voltage_errors:transient", "deliveries:dead"):
            runtime.payments.count(counter)
        text = render(build_registry(runtime)).decode()
    finally:
        runtime.redis.delete(runtime.payments.keys.counters)
        runtime.redis.close()
    samples: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(dict(sample.labels))
    return samples


def alert_rules() -> list[dict[str, Any]]:
    (doc,) = yaml_docs(DEPLOY / "prometheus-alerts.yml")
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_prometheus_scrapes_the_api_metrics_and_loads_the_rules() -> None:
    (config,) = yaml_docs(DEPLOY / "prometheus.yml")
    for rule_file in config["rule_files"]:
        assert (DEPLOY / rule_file).is_file()
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    assert targets == ["127.0.0.1:8080"]
    api_unit = SYSTEMD / "voltage-watcher-api.service"
    (api,) = resolve(systemd_argv(unit_value(api_unit, "Service", "ExecStart"), {}), "api")
    assert targets[0] == f"{api.values['--host'][0]}:{api.values['--port'][0]}"
    jobs = {m for r in alert_rules() for m in re.findall(r'job="([^"]+)"', r["expr"])}
    assert jobs == {job["job_name"]}


def test_alerts_use_only_metrics_and_labels_the_api_serves(
    exposition: dict[str, list[dict[str, str]]],
) -> None:
    rules = alert_rules()
    assert len({r["alert"] for r in rules}) == len(rules)
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["description"]
        for name, matchers in re.findall(r"\b(watcher_[a-z_]+)(?:\{([^}]*)\})?", rule["expr"]):
            assert name in exposition, f"{rule['alert']}: {name} is not served"
            for label, op, value in re.findall(r'(\w+)\s*(=~|!=|!~|=)\s*"([^"]*)"', matchers):
                assert any(label in s for s in exposition[name]), (rule["alert"], label)
                if op == "=":
                    assert any(s.get(label) == value for s in exposition[name]), (
                        f'{rule["alert"]}: no {name}{{{label}="{value}"}}'
                    )
    exprs = " ".join(" ".join(r["expr"].split()) for r in rules)
    for required in (
        "watcher_redis_up == 0",
        'watcher_oldest_overdue_seconds{schedule="poll"} > 60',
        "increase(watcher_dead_letters_total",
        'watcher_voltage_errors_total{kind="auth"}',
        "rate(watcher_dispatch_ticks_total[2m]) == 0",
        'watcher_delivery_queue_depth{queue="retry"}',
    ):
        assert required in exprs, required


def test_the_alert_unit_tests_name_real_alerts() -> None:
    (doc,) = yaml_docs(DEPLOY / "prometheus-alerts.test.yml")
    assert doc["rule_files"] == ["prometheus-alerts.yml"]
    names = {rule["alert"] for rule in alert_rules()}
    tested = {t["alertname"] for test in doc["tests"] for t in test["alert_rule_test"]}
    assert tested <= names
    assert {"WatcherVoltageAuthErrors", "WatcherDispatcherStalled"} <= tested


@pytest.mark.parametrize(
    "argv",
    [["check", "config", "prometheus.yml"], ["test", "rules", "prometheus-alerts.test.yml"]],
)
def test_promtool_accepts_config_rules_and_rule_tests(argv: list[str]) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed")
    result = subprocess.run(
        [promtool, *argv], cwd=DEPLOY, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
