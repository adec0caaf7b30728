"""Who a request acts for: an admin, or one app with a read or write key.

Every object the watcher stores carries the id of the app whose key made it ("" for an
admin, and for everything made before apps existed). An app sees only its own; an admin
sees everything. Routes ask `owns`, and answer an object that is not owned exactly as one
that does not exist, so ids of other apps' objects leak nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

ADMIN_APP = ""  # the owner stored for what admins make


class Scope(StrEnum):
    READ = "read"
    WRITE = "write"


@dataclass(frozen=True)
class Principal:
    actor: str  # in the audit log and the rate limit: tok_... (a bootstrap token) or key_...
    app_id: str | None  # None: an admin
    scope: Scope = Scope.WRITE

    @property
    def is_admin(self) -> bool:
        return self.app_id is None

    @property
    def owner(self) -> str:
        """What an object this principal makes is stored as belonging to."""
        return self.app_id or ADMIN_APP

    def owns(self, app_id: str) -> bool:
        return self.app_id is None or app_id == self.app_id
