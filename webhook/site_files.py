"""The published site directory as the workers see it: files read once per version, by stat."""

from __future__ import annotations

import base64
import json
import os
import threading
from pathlib import Path
from typing import Any


class SiteFiles:
    """Reads `site/` files, re-reading a file only when its inode, size or mtime changed (atomic renames)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[str, tuple[tuple[int, int, int], bytes, dict[str, Any] | None]] = {}
        self._lock = threading.Lock()

    def read(self, relative: str) -> bytes | None:
        entry = self._entry(relative)
        return entry[1] if entry else None

    def payload(self, relative: str) -> dict[str, Any] | None:
        """The decoded payload of one of our own envelopes (trusted: we wrote it after verifying)."""
        entry = self._entry(relative, decode=True)
        return entry[2] if entry else None

    def _entry(self, relative: str, decode: bool = False) -> tuple[Any, bytes, dict[str, Any] | None] | None:
        path = self.root / relative
        try:
            status = os.stat(path)
        except OSError:
            return None
        key = (status.st_ino, status.st_size, status.st_mtime_ns)
        with self._lock:
            cached = self._cache.get(relative)
        if cached and cached[0] == key and (cached[2] is not None or not decode):
            return cached
        try:
            data = path.read_bytes()
        except OSError:
            return None
        payload = None
        if decode:
            try:
                payload = json.loads(base64.b64decode(json.loads(data)["payload"]))
            except (ValueError, KeyError, TypeError):
                payload = None
        entry = (key, data, payload)
        with self._lock:
            if len(self._cache) > 256:
                self._cache.clear()
            self._cache[relative] = entry
        return entry
