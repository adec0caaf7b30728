"""What `watcher up` checks before it starts anything: that it alone holds its data directory,
and that its ports are free. Both fail in one line that says what to change."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from pathlib import Path

LOCK_FILE = "watcher.lock"


class SupervisorError(RuntimeError):
    """`watcher up` cannot start; the message says why and what to change, in one line."""


class DataDirLock:
    """WATCHER_DATA_DIR/watcher.lock, flock'ed: one `watcher up` per data dir. The kernel drops
    the lock when its holders die, so a crash never leaves it stuck; the embedded Redis holds
    it too, so a supervisor killed with -9 does not let a second Redis onto the same AOF."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> int:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise SupervisorError(_held_message(self.path.parent, holder)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return fd

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing our descriptor drops the lock
            self.fd = None


def _held_message(data_dir: Path, holder: str) -> str:
    gone = ""
    if holder.isdigit() and not Path(f"/proc/{holder}").exists():
        gone = " (now gone: a process it started, e.g. its redis-server, still holds the lock)"
    return (
        f"WATCHER_DATA_DIR {data_dir} is in use by another `watcher up` (pid {holder}){gone}; "
        "stop it first, or give this one another WATCHER_DATA_DIR"
    )


def check_port_free(host: str, port: int, what: str, flag: str) -> None:
    """Fail now, in one line, rather than say "up" and let a child crash-loop on the port."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        # As uvicorn and Redis bind: a port in TIME_WAIT after our last run counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise SupervisorError(
                f"port {port} ({what}) on {host} is not available ({exc.strerror}): stop what "
                f"holds it or choose another with {flag}"
            ) from None
