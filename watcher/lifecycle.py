"""`with` support, written once: for what is closed (a connection pool) and for what is started
and stopped (a child process, a server thread).

It sits at the bottom, beside `ids.py` and `timing.py`, so the Voltage client and the process
and thread servers share one copy; nothing here imports the rest of the watcher.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class Closing(ABC):
    """`with thing:` hands back the thing and closes it on the way out, however the block ends."""

    @abstractmethod
    def close(self) -> None:
        """Release what it holds; safe to call twice."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Service(Closing):
    """A background process or thread: `with service:` starts it and stops it after."""

    @abstractmethod
    def start(self, timeout: float = 10.0) -> Self:
        """Start it; return once it serves (or raise saying why it did not)."""

    @abstractmethod
    def stop(self, timeout: float = 10.0) -> None:
        """Stop it and wait for it to go; safe to call twice."""

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> Self:
        return self.start()
