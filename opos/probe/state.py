"""The probe's state directory: every file written atomically, every file untrusted when read back.

head.json, feed.json   the last accepted envelopes (re-verified whenever they are loaded)
cosignature.json       the auditors' cosignatures of that head's commit, when auditors are required
keys.json              the trusted key document, when the probe pins root keys (never replaced by a lower version)
pin.json               the highest sequence ever accepted: kept apart, never forgotten
probe_id               this probe's random id (generated once)
etags.json             the last ETag of the head per mirror (If-None-Match)
ran.json               instruction -> the revision already reported as a run
claims.json            instruction -> the claim answer for a revision
evidence/              both envelopes of every split view seen
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from pathlib import Path
from typing import Any

from opos.atomic import write_atomically
from opos.model import format_time
from opos.probe.verify import Pin


class ProbeState:
    """Reads that fail are treated as nothing saved; writes that fail are recorded in `unwritable` (the poll
    says so in `rejected`) and never stop a plan: a probe with a full or read-only disk still measures."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.unwritable: list[str] = []
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            self.unwritable.append(f"{folder}: {err.strerror}")

    def _write(self, path: Path, data: bytes) -> None:
        try:
            write_atomically(path, data)
        except OSError as err:
            self.unwritable.append(f"{path.name}: {err.strerror}")

    def _json(self, name: str) -> Any:
        try:
            return json.loads((self.folder / name).read_bytes())
        except (OSError, ValueError):
            return None

    def _write_json(self, name: str, value: Any) -> None:
        self._write(self.folder / name, json.dumps(value, indent=1, sort_keys=True).encode())

    def probe_id(self, given: str | None = None) -> str:
        if given:
            return given
        path = self.folder / "probe_id"
        try:
            text = path.read_text().strip()
            if 16 <= len(text) <= 64 and all(c.isalnum() or c in "-_" for c in text):
                return text
        except OSError:
            pass
        text = secrets.token_urlsafe(24)
        self._write(path, text.encode() + b"\n")
        return text

    def cached(self) -> tuple[bytes | None, bytes | None]:
        def read(name: str) -> bytes | None:
            try:
                return (self.folder / name).read_bytes()
            except OSError:
                return None

        return read("head.json"), read("feed.json")

    def cosignature(self) -> bytes | None:
        try:
            return (self.folder / "cosignature.json").read_bytes()
        except OSError:
            return None

    def discard_cache(self) -> None:
        for name in ("head.json", "feed.json", "cosignature.json"):
            try:
                (self.folder / name).unlink(missing_ok=True)
            except OSError as err:
                self.unwritable.append(f"{name}: {err.strerror}")

    def save(self, head: bytes, feed: bytes | None, pin: Pin, cosigned: bytes | None = None) -> None:
        """Feed first, head last: a crash in between leaves a head whose feed is not there, which loading rejects."""
        if cosigned is not None:  # before the head too: a head without its cosignatures is rejected as a whole
            self._write(self.folder / "cosignature.json", cosigned)
        if feed is not None:
            self._write(self.folder / "feed.json", feed)
        self._write(self.folder / "head.json", head)
        current = self.pin()
        if current is None or pin.sequence >= current.sequence:
            self._write_json("pin.json", {"sequence": pin.sequence, "commit": pin.commit})

    def pin(self) -> Pin | None:
        value = self._json("pin.json")
        try:
            return Pin(int(value["sequence"]), str(value["commit"]))
        except (TypeError, KeyError, ValueError):
            return None

    def key_document(self) -> bytes | None:
        """The trusted key document (the newest version walked to), when probes pin root keys."""
        try:
            return (self.folder / "keys.json").read_bytes()
        except OSError:
            return None

    def save_key_document(self, data: bytes) -> None:
        self._write(self.folder / "keys.json", data)

    def etags(self) -> dict[str, str]:
        value = self._json("etags.json")
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}

    def save_etag(self, mirror: str, etag: str | None) -> None:
        etags = self.etags()
        if etag:
            etags[mirror] = etag
        else:
            etags.pop(mirror, None)
        self._write_json("etags.json", etags)

    def ran(self) -> dict[str, str]:
        value = self._json("ran.json")
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}

    def mark_ran(self, runs: dict[str, str]) -> None:
        if runs:
            self._write_json("ran.json", {**self.ran(), **runs})

    def claims(self) -> dict[str, dict[str, Any]]:
        value = self._json("claims.json")
        return value if isinstance(value, dict) else {}

    def save_claim(
        self, instruction: str, revision: str, granted: bool, now: dt.datetime, reason: str | None = None,
        until: dt.datetime | None = None,
    ) -> None:  # fmt: skip
        """A claims service's answer: a refusal with its reason, remembered until `until` (its Retry-After)."""
        claims = self.claims()
        claims[instruction] = {"revision": revision, "granted": granted, "at": format_time(now), "reason": reason,
                               "until": format_time(until) if until else None}  # fmt: skip
        self._write_json("claims.json", claims)

    def save_evidence(self, now: dt.datetime, envelopes: dict[str, bytes]) -> Path:
        folder = self.folder / "evidence" / now.strftime("%Y%m%dT%H%M%SZ")
        for name, data in envelopes.items():
            self._write(folder / name, data)
        return folder
