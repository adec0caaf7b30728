"""Warn about WATCHER_*/VOLTAGE_* variables no setting reads.

The settings class ignores names it does not know (an environment holds plenty of unrelated
variables), so `WATCHER_API_TOKEN=...` (singular) used to start a stack with no tokens and say
nothing. Every process checks its environment and `.env` at start-up and names the closest
known variable. `watcher up` checks once and marks its children, so one typo is one warning.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values

from watcher.settings import Settings

PREFIXES = ("WATCHER_", "VOLTAGE_")
# Set by `watcher up` in its children's environment: the parent already warned.
REPORTED_MARK = "_WATCHER_UNKNOWN_VARIABLES_REPORTED"


@dataclass(frozen=True)
class UnknownVariable:
    name: str
    source: str  # "the environment" or the .env file's path
    suggestion: str | None

    def message(self) -> str:
        hint = f"; did you mean {self.suggestion}?" if self.suggestion else ""
        return f"{self.name} (in {self.source}) is not a setting and is ignored{hint}"


def known_variables() -> list[str]:
    return sorted(name.upper() for name in Settings.model_fields)


def unknown_variables(
    environ: Mapping[str, str], env_file: Path | None = Path(".env")
) -> list[UnknownVariable]:
    """Names with our prefixes that no setting has, from the environment and the .env file."""
    known = known_variables()
    sources: list[tuple[str, list[str]]] = [("the environment", list(environ))]
    if env_file is not None and env_file.is_file():
        sources.append((str(env_file), list(dotenv_values(env_file))))
    found: list[UnknownVariable] = []
    for source, names in sources:
        for name in names:
            upper = name.upper()
            if upper.startswith(PREFIXES) and upper not in known:
                found.append(UnknownVariable(name, source, closest(upper, known)))
    return found


def closest(name: str, known: list[str]) -> str | None:
    """Compared without the shared prefix, which would make every name look alike."""
    prefix = next(p for p in PREFIXES if name.startswith(p))
    rest = {k.removeprefix(prefix): k for k in known if k.startswith(prefix)}
    close = difflib.get_close_matches(name.removeprefix(prefix), list(rest), n=1, cutoff=0.6)
    return rest[close[0]] if close else None


def unreported_unknown_variables() -> list[UnknownVariable]:
    """What this process should warn about: nothing if a parent `watcher up` already did."""
    if os.environ.get(REPORTED_MARK):
        return []
    return unknown_variables(os.environ)
