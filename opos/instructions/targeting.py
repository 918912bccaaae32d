"""Does an instruction apply to a probe now: window, target, sample. Pure functions on instructions.

The same rules run in the service (to grant claims) and in the probe client (to plan), on the
instructions of a verified feed.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from opos.model import Instruction, normalise_network


def in_window(instruction: Instruction, now: dt.datetime) -> bool:
    return instruction.window.contains(now)


def matches(instruction: Instruction, country: str, network: str, platform: str | None = None) -> str | None:
    """None when the target takes this probe; else why not, in words. A probe's unknown platform is None."""
    return instruction.target.excludes(country, network, platform or "")


def sample_point(probe_id: str, instruction_id: str) -> float:
    """Where a probe falls in [0, 1) for an instruction: the first 8 bytes of SHA-256("<probe>:<id>")."""
    digest = hashlib.sha256(f"{probe_id}:{instruction_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def in_sample(instruction: Instruction, probe_id: str) -> bool:
    fraction = instruction.target.sample
    return fraction is None or sample_point(probe_id, instruction.id) < fraction


def claim_scope(instruction: Instruction, country: str, network: str) -> str:
    """What a cap counts: "" for the whole target, or the probe's country or network."""
    per = instruction.target.max_probes_per
    if per == "country":
        return country.upper()
    if per == "network":
        return normalise_network(network)
    return ""
