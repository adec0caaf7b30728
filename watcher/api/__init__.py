"""The HTTP API: payments, subscriptions, deliveries, events, Voltage ingress, health, metrics."""

from watcher.api.app import create_app

__all__ = ["create_app"]
