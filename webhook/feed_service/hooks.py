"""GitHub push webhooks: only a trigger. Nothing in the body is trusted beyond the branch name."""

from __future__ import annotations

import hashlib
import hmac

from flask import Blueprint, abort, request
from flask.typing import ResponseReturnValue

from webhook.body import json_body, read_body
from webhook.feed_service.service import current

blueprint = Blueprint("hooks", __name__)


@blueprint.post("/hooks/github")
def github() -> ResponseReturnValue:
    service = current()
    secret = service.config.webhook_secret
    body = read_body()  # the raw bytes the signature covers; over the limit this is a 413
    if not secret:
        abort(401, "webhooks are off: this service has no OPOS_WEBHOOK_SECRET")
    given = request.headers.get("X-Hub-Signature-256", "")
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(given.encode(), expected.encode()):
        abort(401, "missing or wrong X-Hub-Signature-256: check the webhook's secret")
    event = request.headers.get("X-GitHub-Event", "")
    if event == "ping":
        return {"pong": True}
    if event != "push":
        return {"ignored": f"{event or 'an unnamed'} event: only push events start a sync"}
    if request.mimetype == "application/x-www-form-urlencoded":
        abort(400, "the webhook sends a form: set its content type to application/json on the hosting site")
    document = json_body(body, "a push event")
    ref = document.get("ref") if isinstance(document, dict) else None
    if not isinstance(ref, str):
        abort(400, "a push event's body is a JSON object with a ref")
    wanted = f"refs/heads/{service.config.branch}"
    if ref != wanted:
        return {"ignored": f"a push to {ref}, not {wanted}"}
    delivery = request.headers.get("X-GitHub-Delivery", "")
    names = [f"sha256:{hashlib.sha256(body).hexdigest()}", *([f"id:{delivery}"] if delivery else [])]
    if not service.deliveries.first_time(*names):  # answered 200 all the same: GitHub's redelivery is no error
        return {"ignored": f"this push ({delivery[:100] or 'the same signed body'}) was received already"}
    service.follower.request()  # the sync runs in the background: GitHub gets its answer at once
    return {"sync": "queued"}, 202
