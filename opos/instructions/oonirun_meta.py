"""The metadata an OONI Run engine POSTs for its engine descriptor (OonirunMeta), read as OONI's backend reads it.

Fields, patterns and the 422 answer's shape follow the backend's pydantic model (ooni/backend
`ooniapi/services/oonirun/src/oonirun/routers/v2.py`, OonirunMeta; FastAPI's validation errors): every
problem is reported, each with its `loc` and `msg`; unknown fields are ignored. Pure.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from opos.errors import UntrustedDataError

META_MAX_BYTES = 64 * 1024
NETWORK_TYPES = ("vpn", "wifi", "mobile", "wired_ethernet", "no_internet", "bluetooth", "usb", "unknown")
_PATTERNS = {
    "run_type": "^(timed|manual)$",
    "probe_asn": "^(AS)?([0-9]{1,10})$",
    "network_type": f"^({'|'.join(NETWORK_TYPES)})$",
}
# pydantic's lax booleans: what `is_charging` may be besides true and false
_TRUE, _FALSE = {"1", "on", "t", "true", "y", "yes"}, {"0", "off", "f", "false", "n", "no"}


class MetaInvalid(UntrustedDataError):
    """The metadata cannot be used: 400 (not JSON) or 422 (the backend's list of problems, in `detail`)."""

    def __init__(self, status: int, detail: list[dict[str, Any]] | str) -> None:
        self.status, self.detail = status, detail
        said = detail if isinstance(detail, str) else "; ".join(f"{p['loc'][-1]}: {p['msg']}" for p in detail)
        super().__init__(said)


@dataclass(frozen=True)
class Meta:
    run_type: str
    is_charging: bool
    probe_cc: str
    probe_asn: str
    network_type: str
    website_category_codes: tuple[str, ...] = ()

    @property
    def country(self) -> str | None:
        """The probe's country as instructions name it (IR), or None for what is not a country code (ZZ, "")."""
        code = self.probe_cc.upper()
        return code if len(code) == 2 and code.isascii() and code.isalpha() and code != "ZZ" else None

    @property
    def network(self) -> str | None:
        """`AS<n>`, or None for AS0 (the probe does not know its network)."""
        number = int(self.probe_asn.removeprefix("AS"))
        return f"AS{number}" if number else None


def parse_meta(body: bytes) -> Meta:
    """The metadata in a request body. Raises MetaInvalid: 400 when it is not JSON, 422 naming each bad field."""
    try:
        document = json.loads(body)
    except RecursionError:
        raise MetaInvalid(422, [_problem("value_error", (), "Value error, nested too deeply")]) from None
    except (UnicodeDecodeError, ValueError) as err:
        raise MetaInvalid(400, f"the body is not JSON: {err}") from None
    if not isinstance(document, dict):
        message = "Input should be a valid dictionary or object to extract fields from"
        raise MetaInvalid(422, [_problem("model_attributes_type", (), message)])
    problems: list[dict[str, Any]] = []
    values: dict[str, Any] = {}
    for name in ("run_type", "probe_asn", "probe_cc", "network_type"):
        values[name] = _text(document, name, problems)
    values["is_charging"] = _boolean(document, problems)
    values["website_category_codes"] = _codes(document, problems)
    if problems:
        raise MetaInvalid(422, problems)
    return Meta(**values)


def _problem(kind: str, where: tuple[str | int, ...], message: str, **context: str) -> dict[str, Any]:
    problem: dict[str, Any] = {"type": kind, "loc": ["body", *where], "msg": message}
    if context:
        problem["ctx"] = context
    return problem


def _text(document: dict[str, Any], name: str, problems: list[dict[str, Any]]) -> str:
    if name not in document:
        problems.append(_problem("missing", (name,), "Field required"))
        return ""
    value = document[name]
    if not isinstance(value, str):
        problems.append(_problem("string_type", (name,), "Input should be a valid string"))
        return ""
    pattern = _PATTERNS.get(name)
    if pattern is not None and not re.fullmatch(pattern.strip("^$"), value):
        problems.append(_problem("string_pattern_mismatch", (name,), f"String should match pattern '{pattern}'",
                                 pattern=pattern))  # fmt: skip
    return value


def _boolean(document: dict[str, Any], problems: list[dict[str, Any]]) -> bool:
    if "is_charging" not in document:
        problems.append(_problem("missing", ("is_charging",), "Field required"))
        return False
    value = document["is_charging"]
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    kind, message = ("bool_parsing", "Input should be a valid boolean, unable to interpret input")
    if not isinstance(value, (str, int, float)):
        kind, message = ("bool_type", "Input should be a valid boolean")
    problems.append(_problem(kind, ("is_charging",), message))
    return False


def _codes(document: dict[str, Any], problems: list[dict[str, Any]]) -> tuple[str, ...]:
    value = document.get("website_category_codes", [])
    if not isinstance(value, list):
        problems.append(_problem("list_type", ("website_category_codes",), "Input should be a valid list"))
        return ()
    for index, code in enumerate(value):
        if not isinstance(code, str):
            where = ("website_category_codes", index)
            problems.append(_problem("string_type", where, "Input should be a valid string"))
            if len(problems) >= 20:  # enough to say what is wrong; a list of 30,000 numbers gets no longer answer
                break
    return tuple(code for code in value if isinstance(code, str))
