"""Request bodies: JSON from outsiders, parsed with every failure a 400 (deep nesting included)."""

from __future__ import annotations

import json
from typing import Any

from flask import abort


def json_body(data: bytes, what: str) -> Any:
    """The JSON document in `data`, or a 400 that says what was expected."""
    try:
        return json.loads(data)
    except RecursionError:
        abort(400, f"{what}: nested too deeply")
    except (UnicodeDecodeError, ValueError) as err:
        abort(400, f"{what}: not JSON ({err})")
