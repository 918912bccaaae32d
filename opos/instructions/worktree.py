"""The ledger directory of a working tree, read into `LedgerFiles` for the rules to judge."""

from __future__ import annotations

from pathlib import Path

from opos.instructions.rules import LedgerFiles

MAX_READ_BYTES = 1024 * 1024  # a ledger file larger than this is refused by the rules long before


def _read_capped(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(MAX_READ_BYTES + 1)


def read_ledger_dir(ledger: Path, shown_as: str) -> LedgerFiles:
    """The ledger directory of a working tree. `shown_as` prefixes paths in messages."""
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
