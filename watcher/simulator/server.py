"""Running the simulator: in a background thread (tests, demo, benchmarks) or in the foreground
(`watcher simulator`).

The background server is a `ThreadedServer`: `port=0` gets a free port known as soon as
`start()` returns, and a restart after `stop()` comes back on the same port.
"""

from __future__ import annotations

import uvicorn

from watcher.simulator.app import create_app
from watcher.simulator.config import SimulatorConfig
from watcher.simulator.state import SimulatorState
from watcher.threaded_server import ThreadedServer


class SimulatorServer(ThreadedServer):
    """A simulator on a real loopback port, served by uvicorn in a daemon thread.

    Payments, faults and stats live in the app, so they survive `stop()`/`start()`: a test can
    take Voltage "down" and bring it back on the same `base_url`.
    """

    name = "voltage-sim"
    lifespan = "off"

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(create_app(config), host, port)

    @property
    def config(self) -> SimulatorConfig:
        """The live configuration (`PATCH /_sim/config` changes it; the caller's copy is kept)."""
        return self.state.config

    @property
    def state(self) -> SimulatorState:
        """In-process access to the payments (the HTTP control surface is the contract)."""
        state: SimulatorState = self.app.state.simulator
        return state

    @property
    def base_url(self) -> str:
        """What the watcher uses as `VOLTAGE_API_URL`."""
        return f"{self.root_url}/v1"

    @property
    def control_url(self) -> str:
        return f"{self.root_url}/_sim"


def serve(host: str, port: int, config: SimulatorConfig | None = None) -> None:
    """Run the simulator in the foreground until Ctrl-C (the `watcher simulator` command)."""
    uvicorn.run(
        create_app(config),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
