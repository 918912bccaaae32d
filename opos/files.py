"""The disk side: atomic writes, and a ledger read from a working tree."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from opos.rules import LedgerFiles

MAX_READ_BYTES = 1024 * 1024  # a ledger file larger than this is refused by the rules long before


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write to a temporary file beside `path`, flush it to disk, then rename it over `path`.

    Readers see the old file or the new one, never a part; concurrent writers (threads or
    processes) each use their own temporary file, and the last rename wins.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(descriptor, mode)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _read_capped(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(MAX_READ_BYTES + 1)


def read_ledger_dir(ledger: Path, shown_as: str) -> LedgerFiles:
    """The ledger directory of a working tree, as the rules judge it. `shown_as` prefixes paths in messages."""
    instructions: dict[str, bytes] = {}
    not_files: list[str] = []
    folder = ledger / "instructions"
    if folder.is_dir():
        for entry in sorted(folder.iterdir()):
            if entry.is_file() and not entry.is_symlink():
                instructions[entry.name] = _read_capped(entry)
            else:
                not_files.append(entry.name)
    policy_path = ledger / "policy.yaml"
    policy = _read_capped(policy_path) if policy_path.is_file() else None
    return LedgerFiles(shown_as, instructions, policy, tuple(not_files))
