"""Webhook delivery: signing what we send and guarding where we send it.

- `watcher.delivery.signing`: Standard Webhooks headers and signatures (and a verifier for
  Python receivers).
- `watcher.delivery.ssrf`: subscriber-URL validation at subscribe time;
  `watcher.delivery.guarded_http`: a `requests` adapter that refuses to connect to non-public
  addresses (`watcher.delivery.public_addresses`), checked on the address actually connected to.

Nothing is re-exported here so that importing the package stays cheap; import the modules.
"""
