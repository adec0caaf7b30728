"""An ASGI app served by uvicorn in a daemon thread on a real loopback port.

Tests, the demo and the benchmarks need the simulator and the API on real sockets inside one
process. The socket is bound here, so `port=0` gets a free port known as soon as `start()`
returns, and a restart after `stop()` comes back on the same port.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Literal, Self

import uvicorn
from fastapi import FastAPI

from watcher.lifecycle import Service


class ThreadedServer(Service):
    name = "server"
    lifespan: Literal["on", "off"] = "on"

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._failure: BaseException | None = None

    @property
    def root_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 10.0) -> Self:
        """Serve in the background; returns once uvicorn accepts connections."""
        if self.running:
            return self
        sock = bind_socket(self.host, self.port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            log_config=None,  # leave the host process's logging setup alone
            lifespan=self.lifespan,
            server_header=False,
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        self._server, self._socket, self._failure = server, sock, None
        self._thread = threading.Thread(
            target=self._serve, args=(server, sock), name=f"{self.name}-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive():
                self._cleanup()
                raise RuntimeError(f"the {self.name} failed to start: {self._failure!r}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the {self.name} did not start within {timeout} s")
            self._thread.join(0.01)  # wait on the thread: returns at once if it dies
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and wait for the thread; safe to call twice."""
        server, thread = self._server, self._thread
        if server is not None and thread is not None:
            server.should_exit = True
            thread.join(timeout)
            if thread.is_alive():
                server.force_exit = True
                thread.join(timeout)
        self._cleanup()

    def _serve(self, server: uvicorn.Server, sock: socket.socket) -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:
            self._failure = exc

    def _cleanup(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.close()
        self._server = self._thread = self._socket = None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {self.root_url} {state}>"


def bind_socket(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock
