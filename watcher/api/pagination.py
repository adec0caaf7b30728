"""Pages as the API serves them: the stores page (watcher/paging.py), and a cursor no page
returned is the caller's mistake, answered 422 on `query.cursor`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from watcher.api.errors import invalid
from watcher.paging import CursorError


@contextlib.contextmanager
def cursor_checked() -> Iterator[None]:
    """A store's CursorError, as the API's validation error."""
    try:
        yield
    except CursorError as exc:
        raise invalid("query.cursor", str(exc)) from None
