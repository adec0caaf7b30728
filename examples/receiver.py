"""A complete webhook receiver for voltage-watcher: verify, dedupe, act, answer 2xx fast.

pip install standardwebhooks
WEBHOOK_SECRET=whsec_... python examples/receiver.py 8000
"""

import contextlib
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

webhook = Webhook(os.environ["WEBHOOK_SECRET"])  # the secret shown once when you subscribed
seen: set[str] = set()  # delivery is at least once: keep webhook-ids in your database instead


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        try:
            event = webhook.verify(body, {k.lower(): v for k, v in self.headers.items()})
        except WebhookVerificationError:
            self.send_response(401)  # forged, tampered or older than 5 minutes
            self.end_headers()
            return
        event_id = self.headers["webhook-id"]  # the same on every retry and every subscriber
        if event_id not in seen:
            seen.add(event_id)
            data = event["data"]
            if event["type"] == "payment.completed":
                print("PAID", data["payment_id"], data["payment"].get("metadata"), flush=True)
            elif event["type"] in ("payment.expired", "payment.failed"):
                print("NOT PAID", event["type"], data["payment_id"], flush=True)
            else:
                print("RECEIVED", event["type"], event_id, flush=True)  # webhook.test
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass  # one line per webhook above, not one per request


port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
print(f"receiver: listening on http://127.0.0.1:{port}/ (Ctrl-C stops it)", file=sys.stderr)
with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: stop, without a traceback
    HTTPServer(("127.0.0.1", port), Handler).serve_forever()
