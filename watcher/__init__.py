"""voltage-watcher: watches Voltage Lightning payments and fires signed webhooks."""

__version__ = "0.1.0"
