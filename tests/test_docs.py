"""The docs stay true: every relative link resolves and every command shown still parses.

Links: every markdown link (and reference definition) in README.md, docs/ and bench/README.md
whose target is not http(s)/mailto must name a file or directory that exists relative to the
page, and an `#anchor` on a markdown page must be one of that page's headings, slugged as
GitHub does. Commands: every `watcher ...`, `./scripts/run ...`, `celery -A watcher ...`,
`python -m bench.*` / `tests.chaos` and `bench/run_all` line in a shell code block, and every
inline code span starting with one, is resolved to its subcommand, whose `--help` must exit 0
and list every option the line shows. `watcher` goes through click's CliRunner (fast); celery,
the benches and the fault suite through their real scripts, each `--help` run once.
"""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import click
import pytest
from click.testing import CliRunner

from tests.support import clean_env
from watcher.cli import cli

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
LINK_DOCS = sorted(
    [ROOT / "README.md", ROOT / "bench" / "README.md", *(ROOT / "docs").rglob("*.md")]
)
COMMAND_DOCS = sorted(
    [ROOT / "README.md", ROOT / "bench" / "README.md", *(ROOT / "docs").glob("*.md")]
)

SHELL_LANGUAGES = {"bash", "sh", "shell", "console", "zsh"}
EXTERNAL = re.compile(r"^(?:https?|mailto):", re.IGNORECASE)
# An inline code span is a command when it starts like one of these.
SPAN_PREFIXES = re.compile(
    r"^(?:watcher |\./scripts/run\b|celery -A watcher\b|(?:\.venv/bin/)?python3? -m "
    r"(?:bench\.|tests\.chaos\b)|(?:\./)?bench/run_all\b)"
)
# Celery options before the subcommand that take a value.
CELERY_VALUE_OPTIONS = {"-A", "--app", "-b", "--broker", "--result-backend", "--loader"}
CELERY_VALUE_OPTIONS |= {"--config", "--workdir"}
HELP_TIMEOUT = 60
# One --help to run (the subcommand path or program argv) and the options shown for it.
Level = tuple[tuple[str, ...], list[str]]


# --- markdown structure -------------------------------------------------------------------


@dataclass(frozen=True)
class Fence:
    """A fenced code block: its info-string language, first content line and lines."""

    language: str
    line: int
    lines: tuple[str, ...]


FENCE_OPEN = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([^\s`]*)")


def split_fences(text: str) -> tuple[str, list[Fence]]:
    """The page with fenced blocks blanked (line numbers kept), and the blocks themselves."""
    prose: list[str] = []
    fences: list[Fence] = []
    lines = text.split("\n")
    index = 0
    while index < len(lines):
        opened = FENCE_OPEN.match(lines[index])
        if not opened:
            prose.append(lines[index])
            index += 1
            continue
        marker, language, start = opened.group(2), opened.group(3).lower(), index
        closing = re.compile(rf"^\s*{re.escape(marker[0])}{{{len(marker)},}}\s*$")
        index += 1
        while index < len(lines) and not closing.match(lines[index]):
            index += 1
        body = tuple(lines[start + 1 : index])
        fences.append(Fence(language, start + 2, body))
        prose.extend([""] * (min(index, len(lines) - 1) - start + 1))
        index += 1
    return re.sub(r"<!--.*?-->", blank, "\n".join(prose), flags=re.DOTALL), fences


def blank(match: re.Match[str]) -> str:
    """The match as spaces, its newlines kept, so later line numbers stay right."""
    return re.sub(r"[^\n]", " ", match.group())


CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)((?:(?!\n[ \t]*\n).)+?)(?<!`)\1(?!`)", re.DOTALL)


def code_spans(prose: str) -> Iterator[tuple[int, str]]:
    """(line, content) of every inline code span, a table's `\\|` read as `|`."""
    for match in CODE_SPAN.finditer(prose):
        content = " ".join(match.group(2).split()).replace("\\|", "|")
        yield prose.count("\n", 0, match.start()) + 1, content


def without_code_spans(prose: str) -> str:
    """The prose with code spans blanked: `[x](y)` inside code is not a link."""
    return CODE_SPAN.sub(blank, prose)


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lower-cased, punctuation but '-'/'_' dropped."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


ATX_HEADING = re.compile(r"^ {0,3}#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
SETEXT_UNDERLINE = re.compile(r"^ {0,3}(?:=+|-+)[ \t]*$")


def anchors(page: Path) -> set[str]:
    """Every anchor GitHub gives the page: heading slugs (repeats get -1, -2...) and HTML ids."""
    prose, _ = split_fences(page.read_text(encoding="utf-8"))
    lines = prose.split("\n")
    seen: dict[str, int] = {}
    found: set[str] = set(re.findall(r"<a\s+(?:name|id)=\"([^\"]+)\"", prose))
    for number, line in enumerate(lines):
        atx = ATX_HEADING.match(line)
        previous = lines[number - 1] if number else ""
        if atx:
            title = atx.group(1) or ""
        elif SETEXT_UNDERLINE.match(line) and previous.strip() and not previous.startswith("|"):
            title = previous.strip()
        else:
            continue
        slug = github_slug(title)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


# --- links ----------------------------------------------------------------------------------

INLINE_LINK = re.compile(
    r"(?<!\\)!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]"
    r"\(\s*(<[^>\n]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)"
)
REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)", re.MULTILINE)


def links(page: Path) -> Iterator[tuple[int, str]]:
    """(line, target) of every inline link, image and reference definition on the page."""
    prose = without_code_spans(split_fences(page.read_text(encoding="utf-8"))[0])
    for pattern in (INLINE_LINK, REFERENCE_DEFINITION):
        for match in pattern.finditer(prose):
            yield prose.count("\n", 0, match.start()) + 1, match.group(1).strip("<>")


def link_problem(page: Path, target: str, root: Path = ROOT) -> str | None:
    """Why a link target from `page` (in the repository at `root`) does not resolve."""
    if EXTERNAL.match(target):
        return None
    path_part, _, anchor = target.partition("#")
    if not path_part:
        resolved = page
    elif path_part.startswith("/"):
        resolved = root / unquote(path_part).lstrip("/")
    else:
        resolved = page.parent / unquote(path_part)
    resolved = resolved.resolve()
    if not resolved.is_relative_to(root):
        return f"{target}: points outside the repository"
    shown = resolved.relative_to(root)
    if not resolved.exists():
        return f"{target}: {shown} does not exist"
    if not anchor:
        return None
    anchor = unquote(anchor)
    if resolved.suffix.lower() == ".md" and resolved.is_file():
        if anchor not in anchors(resolved):
            return f"{target}: no heading of {shown} has the anchor #{anchor}"
        return None
    if not re.fullmatch(r"L\d+(?:-L\d+)?", anchor):
        return f"{target}: #{anchor} on a file that is not markdown (only #L<n> works there)"
    return None


DOC_MENTION = re.compile(r"[\w.-]+(?:/[\w.-]+)*\.md")


def link_problems(page: Path) -> list[str]:
    """Every broken relative link on the page, as `file:line: target: why`.

    A code span that is just a markdown file name (`docs/reliability.md`) counts as a link
    too, resolved from the page or from the repository root, as pages write them.
    """
    root = ROOT if page.is_relative_to(ROOT) else page.parent
    shown = page.relative_to(root)
    problems = []
    for line, target in links(page):
        problem = link_problem(page, target, root)
        if problem:
            problems.append(f"{shown}:{line}: {problem}")
    for line, text in code_spans(split_fences(page.read_text(encoding="utf-8"))[0]):
        if DOC_MENTION.fullmatch(text) and not any(
            (b / text).exists() for b in (page.parent, root)
        ):
            problems.append(f"{shown}:{line}: `{text}`: no such markdown file")
    return problems


# --- commands as the docs show them ---------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """One command line from a page: `tool` is how to run it, `argv` what follows it."""

    where: str
    text: str
    tool: tuple[str, ...]
    argv: tuple[str, ...]


def strip_wrappers(tokens: list[str]) -> list[str]:
    """Drop `VAR=value` prefixes and `sudo [-u user]`, `exec`, `env`, `time`, `nohup`."""
    while tokens:
        head = tokens[0]
        if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", head) or head in {"exec", "env", "time", "nohup"}:
            tokens = tokens[1:]
        elif head == "sudo":
            tokens = tokens[1:]
            while tokens and tokens[0].startswith("-"):
                tokens = tokens[2:] if tokens[0] in {"-u", "-g"} else tokens[1:]
        else:
            return tokens
    return tokens


def classify(tokens: list[str]) -> tuple[tuple[str, ...], list[str]] | None:
    """(tool, its arguments) when the tokens run one of the project's commands, else None."""
    tokens = strip_wrappers(tokens)
    if not tokens:
        return None
    head, rest = tokens[0], tokens[1:]
    name = head.rsplit("/", 1)[-1]
    if head in {"./scripts/run", "scripts/run"}:
        return ("watcher",), rest or ["up"]
    if name == "watcher":
        return ("watcher",), rest
    if name == "celery":
        return ("celery",), rest
    if head in {"bench/run_all", "./bench/run_all"}:
        return ("bench/run_all",), rest
    if not re.fullmatch(r"python3?(?:\.\d+)?", name) or not rest:
        return None
    if rest[0] in {"bench/run_all", "./bench/run_all"}:
        return ("bench/run_all",), rest[1:]
    if len(rest) >= 2 and rest[0] == "-m":
        module = rest[1]
        if module.startswith("bench.") or module == "tests.chaos":
            return ("python", "-m", module), rest[2:]
    return None


def strip_comment(line: str) -> str:
    """The line without its `# comment`: a `#` that starts a word outside quotes, as in sh."""
    quote = ""
    for index, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index]
    return line


def shell_commands(line: str) -> Iterator[list[str]]:
    """The simple commands of one shell line (split at ; && || | &), comments dropped."""
    lexer = shlex.shlex(strip_comment(line), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    current: list[str] = []
    for token in lexer:
        if token and set(token) <= set(";&|()"):
            if current:
                yield current
            current = []
        else:
            current.append(token)
    if current:
        yield current


def logical_lines(fence: Fence) -> Iterator[tuple[int, str]]:
    """(line number, text) of each command line, `\\` continuations joined, prompts removed."""
    pending, start = "", fence.line
    for offset, raw in enumerate(fence.lines):
        text = raw
        if not pending:
            start = fence.line + offset
            prompted = text.lstrip().startswith("$ ")
            if fence.language == "console" and not prompted:
                continue  # output, not a command
            if prompted:
                text = text.lstrip()[2:]
        if text.rstrip().endswith("\\"):
            pending += text.rstrip()[:-1] + " "
            continue
        yield start, pending + text
        pending = ""
    if pending:
        yield start, pending


def fence_commands(where: str, fence: Fence) -> Iterator[Command | str]:
    """The project's commands in a shell block; a line that cannot be parsed is a problem."""
    for number, line in logical_lines(fence):
        try:
            simple = list(shell_commands(line))
        except ValueError as exc:
            if classify(line.split()) or SPAN_PREFIXES.match(line.strip()):
                yield f"{where}:{number}: `{line.strip()}`: not valid shell ({exc})"
            continue
        for tokens in simple:
            stripped = strip_wrappers(tokens)
            if len(stripped) >= 3 and stripped[0] in {"sh", "bash"} and stripped[1] == "-c":
                yield from fence_commands(where, Fence("sh", number, (stripped[2],)))
                continue
            found = classify(tokens)
            if found:
                yield Command(f"{where}:{number}", line.strip(), found[0], tuple(found[1]))


def looks_like_shell(fence: Fence) -> bool:
    """A block without a language is shell when one of its lines runs a project command."""
    for line in fence.lines:
        text = line.strip().removeprefix("$ ")
        if SPAN_PREFIXES.match(text):
            return True
    return False


def is_placeholder(token: str) -> bool:
    """`<id>`, `ID`, `PAYMENT_ID`, `K=V`, `...`: stands for a value, not a word to type."""
    return (
        token.startswith("<")
        or token == "..."
        or "=" in token
        or bool(re.fullmatch(r"[A-Z][A-Z0-9_]*", token))
    )


def synopsis_tokens(text: str) -> list[str]:
    """A synopsis' tokens: `[--x X]` brackets dropped, `--a|--b` inside them split."""
    flat = text.replace("[", " ").replace("]", " ")
    try:
        words = shlex.split(flat)
    except ValueError:
        words = flat.split()
    return [part for word in words for part in word.split("|") if part]


def split_alternatives(text: str) -> list[str]:
    """`a [--x]|b ID|c` into its `|` alternatives outside brackets."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char in "[<{":
            depth += 1
        elif char in "]>}":
            depth -= 1
        if char == "|" and depth <= 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def synopsis_variants(text: str) -> list[list[str]]:
    """Each `|` alternative of a synopsis as a full command line of its own.

    `watcher subscriptions list|show|rotate` is three commands: a later alternative replaces
    the first one's last subcommand word; one that starts with an option adds to its path.
    """
    first, *others = split_alternatives(text)
    head = synopsis_tokens(first)
    words: list[str] = []
    for token in head:
        if token.startswith("-") or is_placeholder(token):
            break
        words.append(token)
    variants = [head]
    for other in others:
        tokens = synopsis_tokens(other)
        if not tokens:
            continue
        if classify(tokens):
            variants.append(tokens)
        elif tokens[0].startswith("-"):
            variants.append(words + tokens)
        else:
            variants.append(words[:-1] + tokens)
    return variants


def span_commands(where: str, line: int, text: str) -> Iterator[Command]:
    """The commands an inline code span shows, one per `|` alternative."""
    for tokens in synopsis_variants(text):
        found = classify(tokens)
        if found:
            yield Command(f"{where}:{line}", text, found[0], tuple(found[1]))


def page_commands(page: Path) -> list[Command | str]:
    """Every project command a page shows in shell blocks and inline code spans."""
    where = str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else str(page)
    prose, fences = split_fences(page.read_text(encoding="utf-8"))
    found: list[Command | str] = []
    for fence in fences:
        if fence.language in SHELL_LANGUAGES or (not fence.language and looks_like_shell(fence)):
            found.extend(fence_commands(where, fence))
    for line, text in code_spans(prose):
        if SPAN_PREFIXES.match(text):
            found.extend(span_commands(where, line, text))
    return found


# --- the real --help ------------------------------------------------------------------------


@functools.cache
def watcher_help(path: tuple[str, ...]) -> tuple[int, str]:
    """Exit status and output of `watcher <path> --help`, in process."""
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="watcher", terminal_width=120)
    return result.exit_code, result.output


@functools.cache
def program_help(argv: tuple[str, ...]) -> tuple[int, str]:
    """Exit status and output of `<argv> --help` run as the real program."""
    if argv[0] == "celery":
        program = [str(VENV_BIN / "celery"), *argv[1:]]
    elif argv[0] == "python":
        program = [sys.executable, *argv[1:]]
    else:
        program = [str(ROOT / argv[0]), *argv[1:]]
    proc = subprocess.run(
        [*program, "--help"],
        cwd=ROOT,
        env=clean_env(COLUMNS="120", NO_COLOR="1"),
        capture_output=True,
        text=True,
        timeout=HELP_TIMEOUT,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


def declared_options(help_text: str) -> set[str]:
    """The options a --help lists: every `-x`/`--xx` in the option column of its lines."""
    options: set[str] = set()
    for line in help_text.splitlines():
        column = re.match(r"^\s+(-\S.*?)(?:\s{2,}|$)", line)
        if column:
            options.update(re.findall(r"(?<![\w-])--?[A-Za-z0-9][\w-]*", column.group(1)))
    return options


def shown_option(token: str) -> str | None:
    """The option name a token shows (`--port=1` -> `--port`), or None for a value."""
    if re.fullmatch(r"--[A-Za-z0-9][\w-]*(?:=.*)?|-[A-Za-z](?:=.*)?", token):
        return token.split("=", 1)[0]
    return None


def takes_value(command: click.Command, option: str) -> bool:
    """Whether a click option of `command` consumes the next token."""
    for param in command.params:
        if isinstance(param, click.Option) and option in param.opts + param.secondary_opts:
            return not param.is_flag and not param.count
    return False


def watcher_levels(argv: tuple[str, ...]) -> tuple[list[Level], str]:
    """Walk `watcher` argv through the click groups: (path, options shown) per level, error."""
    command: click.Command = cli
    path: list[str] = []
    shown: list[str] = []
    levels: list[Level] = []
    tokens = list(argv)
    while tokens:
        token = tokens.pop(0)
        option = shown_option(token)
        if option:
            shown.append(option)
            if "=" not in token and takes_value(command, option) and tokens:
                tokens.pop(0)
        elif isinstance(command, click.Group) and not is_placeholder(token):
            sub = command.commands.get(token)
            if sub is None:
                levels.append((tuple(path), shown))
                return levels, f"`watcher {' '.join([*path, token])}`: no such subcommand"
            levels.append((tuple(path), shown))
            path, shown, command = [*path, token], [], sub
    levels.append((tuple(path), shown))
    return levels, ""


def program_levels(command: Command) -> list[Level]:
    """(help argv, options shown) per level of a celery, bench or fault-suite command."""
    if command.tool != ("celery",):
        options = [opt for opt in map(shown_option, command.argv) if opt]
        return [(command.tool, options)]
    tokens, before = list(command.argv), []
    while tokens and tokens[0].startswith("-"):
        token = tokens.pop(0)
        before.append(token)
        if token in CELERY_VALUE_OPTIONS and tokens:
            before.append(tokens.pop(0))
    global_options = [opt for opt in map(shown_option, before) if opt]
    levels: list[Level] = [(("celery",), global_options)]
    if tokens:
        sub_options = [opt for opt in map(shown_option, tokens[1:]) if opt]
        levels.append((("celery", *before, tokens[0]), sub_options))
    return levels


def help_runs(commands: Iterable[Command]) -> set[tuple[str, ...]]:
    """Every program --help the commands need (to run them side by side, once each)."""
    return {
        argv
        for command in commands
        if command.tool != ("watcher",)
        for argv, _ in program_levels(command)
    }


def command_problems(command: Command) -> list[str]:
    """Why a shown command would not run as shown: unknown subcommand, --help, or option."""
    if command.tool == ("watcher",):
        levels, error = watcher_levels(command.argv)
        runs = [(("watcher", *path), options, watcher_help(path)) for path, options in levels]
    else:
        levels, error = program_levels(command), ""
        runs = [(argv, options, program_help(argv)) for argv, options in levels]
    problems = [f"{command.where}: {error} (in `{command.text}`)"] if error else []
    for argv, options, (status, output) in runs:
        shown = " ".join(argv).replace("python -m", ".venv/bin/python -m")
        if status != 0:
            said = " ".join(output.split())[-300:]
            problems.append(f"{command.where}: `{shown} --help` exits {status}: {said}")
            continue
        problems.extend(
            f"{command.where}: {option} is not an option of `{shown}` (in `{command.text}`)"
            for option in options
            if option not in declared_options(output)
        )
    return problems


def prefetch_help(commands: Iterable[Command]) -> None:
    """Run every program --help the commands need, a few at a time, into the cache."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(program_help, sorted(help_runs(commands))))


@pytest.fixture(scope="module")
def all_commands() -> dict[Path, list[Command | str]]:
    """Every page's commands, with every program --help they need already run."""
    found = {page: page_commands(page) for page in COMMAND_DOCS}
    prefetch_help(c for items in found.values() for c in items if isinstance(c, Command))
    return found


# --- the checks -----------------------------------------------------------------------------


@pytest.mark.parametrize("page", LINK_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    problems = link_problems(page)
    assert not problems, "broken links:\n" + "\n".join(problems)


@pytest.mark.parametrize("page", COMMAND_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_commands_shown_parse(page: Path, all_commands: dict[Path, list[Command | str]]) -> None:
    problems: list[str] = []
    for item in all_commands[page]:
        problems.extend([item] if isinstance(item, str) else command_problems(item))
    assert not problems, "commands that do not parse:\n" + "\n".join(problems)


def test_checker_sees_the_commands(all_commands: dict[Path, list[Command | str]]) -> None:
    """A checker that extracts nothing passes everything: pin what the README must yield."""
    readme = [c for c in all_commands[ROOT / "README.md"] if isinstance(c, Command)]
    shown = {" ".join([*c.tool, *c.argv]) for c in readme}
    subscriptions = {a for c in readme if c.argv[:1] == ("subscriptions",) for a in c.argv[1:2]}
    assert {"list", "show", "rotate", "enable", "disable", "test", "delete", "add"} <= subscriptions
    assert {"watcher deliveries show ID", "watcher deliveries redeliver ID"} <= shown
    assert "watcher up" in shown  # `./scripts/run` alone
    assert "watcher up --simulate" in shown
    assert any(c.tool == ("celery",) and "worker" in c.argv for c in readme)
    assert any(c.tool == ("python", "-m", "bench.detection") for c in readme)
    assert any(c.tool == ("python", "-m", "tests.chaos") for c in readme)
    assert sum(len(items) for items in all_commands.values()) > 60


def test_installed_entry_point_runs() -> None:
    """The `watcher` script pyproject installs is the click group the other checks walk."""
    proc = subprocess.run(
        [str(VENV_BIN / "watcher"), "--help"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=HELP_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert set(cli.commands) <= set(re.findall(r"^  (\S+)", proc.stdout, re.MULTILINE))


# --- the checker itself rejects what it must ------------------------------------------------


def test_github_slugs() -> None:
    assert github_slug("`bench.detection`: detection latency, and cost") == (
        "benchdetection-detection-latency-and-cost"
    )
    assert github_slug("Detection: list sweeps detect, reads confirm") == (
        "detection-list-sweeps-detect-reads-confirm"
    )
    assert github_slug("Single machine: `watcher up`") == "single-machine-watcher-up"
    assert github_slug("snake_case and dash-case **bold**") == "snake_case-and-dash-case-bold"


def test_checker_rejects_bogus_links(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## Twice\n\n## Twice\n", encoding="utf-8")
    (tmp_path / "code.py").write_text("x = 1\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "# Top `title`\n\n"
        "[ok](other.md) [ok](other.md#twice-1) [ok](#top-title) [ok](code.py#L1)\n"
        "[ok](https://example.com/missing.md) `[not a link](missing.md)`\n"
        "[gone](missing.md)\n"
        "[bad anchor](other.md#no-such-heading)\n"
        "[bad local](#nowhere) [third](other.md#twice-2)\n"
        "see `other.md` and `gone.md`\n"
        "```bash\n[in code](missing.md)\n```\n",
        encoding="utf-8",
    )
    problems = [p.split(": ", 1)[1] for p in link_problems(page)]
    assert len(problems) == 5, problems
    assert problems[0].startswith("missing.md: ")
    assert problems[1].startswith("other.md#no-such-heading: ")
    assert problems[2].startswith("#nowhere: ")
    assert problems[3].startswith("other.md#twice-2: ")
    assert problems[4].startswith("`gone.md`: ")


def check_text(tmp_path: Path, text: str) -> list[str]:
    """The command problems of a page holding `text`."""
    page = tmp_path / "page.md"
    page.write_text(text, encoding="utf-8")
    commands = page_commands(page)
    prefetch_help(c for c in commands if isinstance(c, Command))
    return [p for c in commands for p in ([c] if isinstance(c, str) else command_problems(c))]


def test_checker_accepts_real_commands(tmp_path: Path) -> None:
    problems = check_text(
        tmp_path,
        "| a | b |\n|---|---|\n"
        "| `watcher deliveries list [--subscription ID] [--status S]\\|show ID\\|redeliver ID` |\n"
        "| `watcher subscriptions list\\|show\\|rotate` | `watcher --version` |\n"
        "```bash\n./scripts/run up --simulate --port=8080   # comment --bogus\n"
        "celery -A watcher worker --loglevel INFO \\\n  -Q watcher.poll --concurrency 2\n```\n",
    )
    assert problems == []


def test_checker_rejects_bogus_commands(tmp_path: Path) -> None:
    problems = check_text(
        tmp_path,
        "| `watcher deliveries list [--subscription ID]\\|show ID\\|zap ID` | x |\n"
        "`watcher subscriptions add URL [--no-such-option]`\n"
        "```bash\nwatcher frobnicate --help\n"
        "FOO=1 sudo -u me .venv/bin/watcher up --flower-prt 1\n"
        "celery -A watcher worker --no-such-flag && echo done\n"
        ".venv/bin/python -m bench.detection --payments 10 --no-such-bench-flag\n```\n",
    )
    expected = [
        "`watcher deliveries zap`: no such subcommand",
        "--no-such-option is not an option of `watcher subscriptions add`",
        "`watcher frobnicate`: no such subcommand",
        "--flower-prt is not an option of `watcher up`",
        "--no-such-flag is not an option of `celery -A watcher worker`",
        "--no-such-bench-flag is not an option of `.venv/bin/python -m bench.detection`",
    ]
    for needle in expected:
        assert any(needle in problem for problem in problems), (needle, problems)
    assert len(problems) == len(expected), problems
