"""Request bodies: JSON from outsiders, parsed with every failure a 400 (deep nesting included)."""

from __future__ import annotations

import json
from typing import Any

from flask import abort, current_app, request
from werkzeug.exceptions import RequestTimeout

from webhook.deadline import deadline
from webhook.limits import LIMITS


def read_body() -> bytes:
    """The request's body (capped by MAX_CONTENT_LENGTH: 413 past it), read within OPOS_BODY_SECONDS.

    Under gevent workers a slow body holds only a greenlet, which the deadline then frees: 408, and
    the worker closes the connection (webhook/gworker.py); sync workers have gunicorn's worker timeout.
    """
    seconds = float(current_app.config.get("OPOS_BODY_SECONDS", LIMITS.body_seconds))
    late = RequestTimeout(f"the request body took longer than {seconds:g} s (OPOS_BODY_SECONDS)")
    with deadline(seconds, late):
        return request.get_data(cache=False)


def json_body(data: bytes, what: str) -> Any:
    """The JSON document in `data`, or a 400 that says what was expected."""
    try:
        return json.loads(data)
    except RecursionError:
        abort(400, f"{what}: nested too deeply")
    except (UnicodeDecodeError, ValueError) as err:
        abort(400, f"{what}: not JSON ({err})")
