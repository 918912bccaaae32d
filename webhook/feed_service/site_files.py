"""The published site directory as the workers see it: files read once per version, by stat."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from opos.errors import EnvelopeInvalid
from opos.lru import LRU
from opos.signing.documents import Feed, Head, read_own_feed, read_own_head
from webhook.limits import LIMITS

Version = tuple[int, int, int]  # inode, size, mtime: every publication renames a new file into place


class SiteFiles:
    """Reads `site/` files, re-reading a file only when its inode, size or mtime changed (atomic renames)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._files: LRU[str, tuple[Version, bytes]] = LRU(LIMITS.site_files_kept)
        self._documents: dict[str, tuple[Version, Head | Feed]] = {}
        self._lock = threading.Lock()

    def _version(self, relative: str) -> Version | None:
        try:
            status = os.stat(f"{self.root}/{relative}")  # a string: pathlib would cost more than the stat
        except OSError:
            return None
        return (status.st_ino, status.st_size, status.st_mtime_ns)

    def read(self, relative: str) -> bytes | None:
        return self.versioned(relative)[1]

    def versioned(self, relative: str) -> tuple[Version | None, bytes | None]:
        """The file's contents and the version they were read at (None, None when it is missing)."""
        version = self._version(relative)
        if version is None:
            return None, None
        with self._lock:
            cached = self._files.get(relative)
        if cached is not None and cached[0] == version:
            return cached
        try:
            data = (self.root / relative).read_bytes()
        except OSError:
            return None, None
        with self._lock:
            self._files.put(relative, (version, data))
        return version, data

    def head(self) -> Head | None:
        """The served head (our own output: trusted, we wrote it after verifying), decoded once per version."""
        document = self._document("v1/head.json")
        return document if isinstance(document, Head) else None

    def feed(self) -> Feed | None:
        """The served feed, decoded once per version."""
        document = self._document("v1/feed.json")
        return document if isinstance(document, Feed) else None

    def _document(self, relative: str) -> Head | Feed | None:
        version, data = self.versioned(relative)
        if version is None or data is None:
            return None
        with self._lock:
            cached = self._documents.get(relative)
        if cached is not None and cached[0] == version:
            return cached[1]
        try:
            document: Head | Feed = read_own_head(data) if relative == "v1/head.json" else read_own_feed(data)
        except EnvelopeInvalid:
            return None
        with self._lock:
            self._documents[relative] = (version, document)
        return document
