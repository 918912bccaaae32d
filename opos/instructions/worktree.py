"""The ledger directory of a working tree, read into `LedgerFiles` for the rules to judge."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from opos.instructions.rules import LedgerFiles
from opos.limits import MAX_KEY_FILE_BYTES, MAX_KEY_FILES

MAX_READ_BYTES = 1024 * 1024  # a ledger file larger than this is refused by the rules long before


def _read_capped(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(MAX_READ_BYTES + 1)


MAX_ENTRIES = 100_000  # a ledger directory larger than this is not walked further for links


def links_in(ledger: Path) -> list[str]:
    """Every symbolic link in the ledger directory (paths inside it), never following one."""
    found: list[str] = []
    seen = 0
    for folder, folders, names in os.walk(ledger, followlinks=False):
        for name in [*folders, *names]:
            seen += 1
            path = Path(folder) / name
            if path.is_symlink():
                found.append(path.relative_to(ledger).as_posix())
        if seen > MAX_ENTRIES:
            break
    return sorted(found)


def read_ledger_dir(ledger: Path, shown_as: str) -> LedgerFiles:
    """The ledger directory of a working tree. `shown_as` prefixes paths in messages.

    Symbolic links are reported, never followed: their targets may lie outside the repository.
    """
    instructions: dict[str, bytes] = {}
    not_files: list[str] = []
    folder = ledger / "instructions"
    if folder.is_dir() and not folder.is_symlink():
        for entry in sorted(folder.iterdir()):
            if entry.is_file() and not entry.is_symlink():
                instructions[entry.name] = _read_capped(entry)
            else:
                not_files.append(entry.name)
    policy_path = ledger / "policy.yaml"
    plain = policy_path.is_file() and not policy_path.is_symlink()
    policy = _read_capped(policy_path) if plain else None
    ids = {name: blob_id(data) for name, data in instructions.items()}
    return LedgerFiles(shown_as, instructions, policy, tuple(not_files), tuple(links_in(ledger)), ids=ids)


def read_key_files(ledger: Path) -> dict[str, bytes | None]:
    """`<ledger>/keys/` of a working tree as the chain check reads it: name → contents, None for what is
    not a small plain file (links and folders included, never followed)."""
    folder = ledger / "keys"
    if not folder.is_dir() or folder.is_symlink():
        return {}
    files: dict[str, bytes | None] = {}
    for path in sorted(folder.iterdir())[:MAX_KEY_FILES]:
        small = path.is_file() and not path.is_symlink() and path.stat().st_size <= MAX_KEY_FILE_BYTES
        files[path.name] = path.read_bytes() if small else None
    return files


def blob_id(data: bytes) -> str:
    """The id git gives a file with these contents: verdicts saved for a commit's file hold for it too."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()
