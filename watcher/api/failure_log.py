"""Logging an unexpected exception without leaking what its frames held."""

from __future__ import annotations

import traceback
from typing import Any


def log_failure(logger: Any, message: str, exc: BaseException, **fields: Any) -> None:
    """Log an unexpected exception with a plain traceback: never the frames' local variables
    (a rich or dict traceback would print them, and a local may hold a secret)."""
    logger.error(
        message,
        error=f"{type(exc).__name__}: {exc}",
        traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        **fields,
    )
