"""Does an instruction apply to a probe now: window, target, sample. Pure functions on feed entries.

The same rules run in the service (to grant claims) and in the probe client (to plan), on the
normalised instructions of a verified feed (dicts as in schemas/feed.schema.json).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from typing import Any

from opos.model import parse_time


def in_window(instruction: Mapping[str, Any], now: dt.datetime) -> bool:
    window = instruction["window"]
    return parse_time(window["start"]) <= now < parse_time(window["end"])


def matches(instruction: Mapping[str, Any], country: str, network: str, platform: str | None = None) -> str | None:
    """None when the target takes this probe; else why not, in words."""
    target = instruction["target"]
    countries = target["countries"]
    if countries != ["*"] and country.upper() not in countries:
        return f"the instruction targets {', '.join(countries)}, not {country.upper()}"
    networks = target["networks"]
    if networks and normalise_network(network) not in networks:
        return f"the instruction targets the networks {', '.join(networks)}, not {network}"
    platforms = target["platforms"]
    if platforms and platform not in platforms:
        return f"the instruction targets the platforms {', '.join(platforms)}, not {platform}"
    return None


def normalise_network(network: str) -> str:
    digits = network.upper().removeprefix("AS")
    return f"AS{int(digits)}" if digits.isdigit() else network


def sample_point(probe_id: str, instruction_id: str) -> float:
    """Where a probe falls in [0, 1) for an instruction: the first 8 bytes of SHA-256("<probe>:<id>")."""
    digest = hashlib.sha256(f"{probe_id}:{instruction_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def in_sample(instruction: Mapping[str, Any], probe_id: str) -> bool:
    fraction = instruction["target"]["sample"]
    return fraction is None or sample_point(probe_id, instruction["id"]) < fraction


def claim_scope(instruction: Mapping[str, Any], country: str, network: str) -> str:
    """What a cap counts: "" for the whole target, or the probe's country or network."""
    per = instruction["target"]["max_probes_per"]
    if per == "country":
        return country.upper()
    if per == "network":
        return normalise_network(network)
    return ""
