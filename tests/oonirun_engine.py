"""The engine's side of OONI Run v2, played as ooni/probe-cli does it, for the bridge's client tests.

Written from the spec (ooni/spec backends/bk-005-ooni-run-v2.md, "GET the OONI Run engine descriptor") and
from ooni/probe-cli `internal/oonirun/v2.go` at 7cb22410c98db6dbc801887d93b65c8a5318ad07: a URL that contains
`/oonirun/links/` and `/engine-descriptor/` is POSTed the probe's context (v2EngineDescriptorRequest), any other
is fetched with GET; the answer is decoded into V2Descriptor as Go's encoding/json would (unknown fields
ignored, a wrong type an error); then each nettest with a name is run on its inputs (V2MeasureDescriptor).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class V2Nettest:
    test_name: str
    inputs: list[str] | None
    options: Any
    is_background_run_enabled: bool | None  # nil: true
    is_manual_run_enabled: bool | None


@dataclass(frozen=True)
class V2Descriptor:
    name: str
    description: str
    author: str
    nettests: list[V2Nettest]
    revision: str
    date_created: str


def _typed(value: Any, kind: type, field: str, optional: bool = True) -> Any:
    """Go's json.Unmarshal into a typed field: null leaves the zero value, another type is an error."""
    if value is None and optional:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"json: cannot unmarshal {type(value).__name__} into Go struct field {field}")
    return value


def decode(data: bytes) -> V2Descriptor:
    document = json.loads(data)
    if not isinstance(document, dict):
        raise ValueError("json: cannot unmarshal into Go value of type oonirun.V2Descriptor")
    nettests = []
    for item in _typed(document.get("nettests"), list, "nettests") or []:
        inputs = _typed(item.get("inputs"), list, "inputs")
        for one in inputs or []:
            _typed(one, str, "inputs", optional=False)
        nettests.append(V2Nettest(
            _typed(item.get("test_name"), str, "test_name") or "", inputs, item.get("options"),
            _typed(item.get("is_background_run_enabled"), bool, "is_background_run_enabled"),
            _typed(item.get("is_manual_run_enabled"), bool, "is_manual_run_enabled"),
        ))  # fmt: skip
    text = {name: _typed(document.get(name), str, name) or "" for name in
            ("name", "description", "author", "revision", "date_created")}  # fmt: skip
    return V2Descriptor(nettests=nettests, **text)


def fetch(url: str, probe_cc: str, probe_asn: str) -> V2Descriptor:
    """v2FetchDescriptor: POST the probe's context to an engine descriptor URL, GET any other."""
    if "/oonirun/links/" in url and "/engine-descriptor/" in url:
        request = {"is_charging": True, "run_type": "manual", "probe_cc": probe_cc, "probe_asn": probe_asn,
                   "network_type": "wifi", "website_category_codes": []}  # fmt: skip
        asked = urllib.request.Request(url, json.dumps(request).encode(), {"Content-Type": "application/json"})
    else:
        asked = urllib.request.Request(url)
    with urllib.request.urlopen(asked, timeout=30) as answer:
        return decode(answer.read())


def measure(descriptor: V2Descriptor, run: Callable[[str, list[str], Any], None], background: bool) -> int:
    """V2MeasureDescriptor: run each nettest that has a name (and, per the spec's flags, is enabled for this kind
    of run); the number skipped."""
    skipped = 0
    for nettest in descriptor.nettests:
        enabled = nettest.is_background_run_enabled if background else nettest.is_manual_run_enabled
        if not nettest.test_name or enabled is False:
            skipped += 1
            continue
        run(nettest.test_name, nettest.inputs or [], nettest.options)
    return skipped
