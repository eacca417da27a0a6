"""The official Svix Python SDK as the only client of our management API.

Run by tests/it/api.rs with WEBHOOK_API_URL and WEBHOOK_API_TOKEN set while a worker runs. It plays
the producer's software (the SDK) and the customer's receiver (which verifies every delivery with
the SDK's own `Webhook(secret).verify`). Exits non-zero with a message on the first failure.
"""

import json
import os
import queue
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from svix.api import (
    ApplicationIn,
    EndpointIn,
    EndpointListOptions,
    EndpointSecretRotateIn,
    MessageIn,
    MessageListOptions,
    Svix,
    SvixOptions,
)
from svix.webhooks import Webhook, WebhookVerificationError

DEADLINE_S = 60
received: "queue.Queue[tuple[bytes, dict]]" = queue.Queue()


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        received.put((body, {k.lower(): v for k, v in self.headers.items()}))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def fail(message):
    print(f"svix sdk: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def next_delivery():
    try:
        return received.get(timeout=DEADLINE_S)
    except queue.Empty:
        fail(f"no delivery arrived within {DEADLINE_S} s")


def verified(secret, body, headers):
    """The payload, once the SDK's own verifier accepted the delivery."""
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError as err:
        fail(f"the SDK's own verifier refused a delivery: {err}")
    return json.loads(body)


def wait_for(what, check):
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    fail(f"timed out waiting for {what}")


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{server.server_address[1]}/hook"

    svix = Svix(os.environ["WEBHOOK_API_TOKEN"], SvixOptions(server_url=os.environ["WEBHOOK_API_URL"]))
    app = svix.application.get_or_create(ApplicationIn(name="Customer 42", uid="customer-42"))
    again = svix.application.get_or_create(ApplicationIn(name="Customer 42", uid="customer-42"))
    if again.id != app.id:
        fail(f"get-or-create made a second application: {app.id} then {again.id}")
    if not app.id.startswith("app_"):
        fail(f"application id {app.id!r} is not an app_ id")

    endpoint = svix.endpoint.create(app.id, EndpointIn(url=hook, event_types=["invoice.paid"], description="billing"))
    if endpoint.event_types != ["invoice.paid"]:
        fail(f"the endpoint's event types came back as {endpoint.event_types!r}")
    secret = svix.endpoint.get_secret(app.id, endpoint.id).key
    if not secret.startswith("whsec_"):
        fail("the secret is not a whsec_ secret")

    # Not subscribed: must not arrive. Subscribed: must, verified with the SDK.
    voided = svix.message.create(app.id, MessageIn(event_type="invoice.voided", payload={"n": 0}))
    first = svix.message.create(app.id, MessageIn(event_type="invoice.paid", payload={"amount": 42, "n": 1}))
    body, headers = next_delivery()
    payload = verified(secret, body, headers)
    if payload.get("amount") != 42 or headers.get("webhook-id") != first.id:
        fail(f"got {payload!r} with webhook-id {headers.get('webhook-id')!r}, expected message {first.id}")

    def succeeded():
        attempts = svix.message_attempt.list_by_msg(app.id, first.id).data
        return [a for a in attempts if int(a.status) == 0]

    attempt = wait_for("a successful attempt in the history", succeeded)[0]
    if attempt.endpoint_id != endpoint.id or attempt.response_status_code != 204:
        fail(f"the attempt says endpoint {attempt.endpoint_id}, status {attempt.response_status_code}")

    svix.endpoint.rotate_secret(app.id, endpoint.id, EndpointSecretRotateIn())
    rotated = svix.endpoint.get_secret(app.id, endpoint.id).key
    if rotated == secret:
        fail("rotating the secret did not change it")
    second = svix.message.create(app.id, MessageIn(event_type="invoice.paid", payload={"amount": 43, "n": 2}))
    body, headers = next_delivery()
    if verified(rotated, body, headers).get("amount") != 43 or headers.get("webhook-id") != second.id:
        fail("the message after the rotation was not the second one")

    for n in range(3):
        svix.endpoint.create(app.id, EndpointIn(url=f"{hook}/{n}", uid=f"extra-{n}"))
    seen, iterator = [], None
    while True:
        page = svix.endpoint.list(app.id, EndpointListOptions(limit=2, iterator=iterator))
        seen.extend(e.id for e in page.data)
        if page.done:
            break
        iterator = page.iterator
    if len(seen) != 4 or len(set(seen)) != 4:
        fail(f"paging through the endpoints gave {seen}")
    messages, iterator = [], None
    while True:
        page = svix.message.list(app.id, MessageListOptions(limit=1, iterator=iterator))
        messages.extend(m.id for m in page.data)
        if page.done:
            break
        iterator = page.iterator
    if messages != [second.id, first.id, voided.id]:
        fail(f"paging through the messages gave {messages}")
    if not received.empty():
        fail("a message of an unsubscribed event type was delivered")
    print(json.dumps({"application": app.id, "endpoint": endpoint.id, "messages": len(messages)}))
    print("svix sdk: ok")


if __name__ == "__main__":
    main()
