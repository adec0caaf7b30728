"""A faithful stand-in for Voltage's payments API, with a control surface for tests.

It powers the test suite, `watcher demo` and the benchmarks: 202 on create, early 404s, 409 on
a reused id, Voltage's error envelope, the receive status machine, real signed BOLT11 invoices,
cursor pagination, and faults (errors, 429s, garbage, latency) on demand. See docs/simulator.md.
"""

from watcher.simulator.app import create_app
from watcher.simulator.config import SimulatorConfig
from watcher.simulator.server import SimulatorServer, serve
from watcher.simulator.state import SimulatorState

__all__ = ["SimulatorConfig", "SimulatorServer", "SimulatorState", "create_app", "serve"]
