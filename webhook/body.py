"""Request bodies: JSON from outsiders, parsed with every failure a 400 (deep nesting included)."""

from __future__ import annotations

import json
from typing import Any

from flask import abort, request

from webhook.limits import LIMITS


def read_body() -> bytes:
    """The request's body (capped by MAX_CONTENT_LENGTH: 413 past it), read within LIMITS.body_seconds.

    Under gevent workers a slow body holds only a greenlet, which the timeout then frees (408);
    sync workers have gunicorn's worker timeout behind them.
    """
    if _gevent_patched():
        import gevent

        try:
            with gevent.Timeout(LIMITS.body_seconds):
                return request.get_data(cache=False)
        except gevent.Timeout:
            abort(408, f"the request body took longer than {LIMITS.body_seconds:g} s")
    return request.get_data(cache=False)


def _gevent_patched() -> bool:
    try:
        from gevent import monkey
    except ImportError:
        return False
    return bool(monkey.is_module_patched("socket"))


def json_body(data: bytes, what: str) -> Any:
    """The JSON document in `data`, or a 400 that says what was expected."""
    try:
        return json.loads(data)
    except RecursionError:
        abort(400, f"{what}: nested too deeply")
    except (UnicodeDecodeError, ValueError) as err:
        abort(400, f"{what}: not JSON ({err})")
