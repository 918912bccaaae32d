"""Answers both services give alike."""

from __future__ import annotations

from flask import Response, abort, jsonify, request
from werkzeug.exceptions import HTTPException

# A body that came too slowly or is too large was not read to its end: the connection cannot carry
# another request, and the worker closes it (webhook/gworker.py); the answer says so.
CLOSING = frozenset({408, 413})


def json_error(error: HTTPException) -> Response:
    """An HTTP error as JSON ({error, detail}) with the headers it carries (Allow on 405, Retry-After on 429…)."""
    response = jsonify(error=error.name, detail=error.description)
    response.status_code = error.code or 500
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    if response.status_code in CLOSING:
        response.headers["Connection"] = "close"
    return response


def refuse_undecodable() -> None:
    """400 when the request's path, query or a header is not UTF-8 (a Flask before_request).

    WSGI hands these over as the raw bytes read as Latin-1; a raw 0xFF on the request line would
    otherwise reach the views as text that cannot be encoded back, and fail there.
    """
    environ = request.environ
    for key, value in environ.items():
        if (key.startswith("HTTP_") or key in _TEXT) and isinstance(value, str) and not value.isascii():
            try:
                value.encode("latin-1").decode("utf-8")
            except UnicodeError:
                where = _TEXT.get(key) or f"the {key[5:].replace('_', '-').title()} header"
                abort(400, f"{where} is not UTF-8 text: send text, percent-encoded where it is not ASCII")


_TEXT = {"PATH_INFO": "the path", "QUERY_STRING": "the query string", "CONTENT_TYPE": "the Content-Type header"}
