"""Answers both services give alike."""

from __future__ import annotations

from flask import Response, jsonify
from werkzeug.exceptions import HTTPException


def json_error(error: HTTPException) -> Response:
    """An HTTP error as JSON ({error, detail}) with the headers it carries (Allow on 405, Retry-After on 429…)."""
    response = jsonify(error=error.name, detail=error.description)
    response.status_code = error.code or 500
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response
