"""Every Lua script of the watcher: the `.lua` files in this folder, registered once per client.

Each script is one atomic step that must not be split across round trips. The stores that use
them live above this module; two stores on one Redis client share one registration.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

import redis
from redis.commands.core import Script

USES = "-- uses: "


@cache
def source(name: str) -> str:
    """The text of `<name>.lua`, read once per process; a first line `-- uses: LIB` puts
    LIB.lua (Lua functions two scripts share) in front of it."""
    text = files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")
    first = text.partition("\n")[0]
    return f"{source(first.removeprefix(USES).strip())}\n{text}" if first.startswith(USES) else text


@dataclass(frozen=True)
class Scripts:
    claim_due: Script
    claim_with_room: Script
    adopt: Script
    transition: Script
    reschedule: Script
    raise_field: Script
    create_delivery: Script
    acquire_slot: Script
    record_poll: Script
    begin_attempt: Script
    finish_attempt: Script
    take_request: Script
    authenticate: Script
    claim: Script
    mark_created: Script


_registered: weakref.WeakKeyDictionary[redis.Redis, Scripts] = weakref.WeakKeyDictionary()


def scripts_for(client: redis.Redis) -> Scripts:
    """The scripts bound to `client` (registering only computes their SHA; Redis loads a
    script on its first use and again after a restart, through redis-py's EVALSHA fallback)."""
    found = _registered.get(client)
    if found is None:
        found = Scripts(
            **{name: client.register_script(source(name)) for name in Scripts.__annotations__}
        )
        _registered[client] = found
    return found
