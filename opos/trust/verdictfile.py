"""The verdicts of a verified history, kept in the state directory between runs (a `VerifiedCache`)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from opos.model import CommitHash, KeyFingerprint, Signer
from opos.trust.verdicts import Accepted


class FileCache:
    """Accepted commits in a tab-separated file, appended as they are verified.

    A line: commit, sequence, key, principals, generation, approvers (comma-separated), the signers
    its step needs, and 1 when its first-parent chain has them all (else 0). Lines of four fields,
    from before the two-person rule, are read as steps that needed one signer.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[CommitHash, Accepted] = {}
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = ""
        for line in text.splitlines():
            fields = line.split("\t")
            if len(fields) == 4:
                fields += ["", "", "1", "1"]
            if len(fields) != 8 or len(fields[0]) != 40 or not fields[1].isdigit():
                continue  # a torn write: that commit is simply verified again
            commit, sequence, key, principal, generation, approvers, needed, reviewed = fields
            if not (generation.isdigit() or not generation) or not needed.isdigit() or reviewed not in ("0", "1"):
                continue
            signer = Signer(principal, KeyFingerprint(key)) if key else None
            self.entries[CommitHash(commit)] = Accepted(
                CommitHash(commit),
                int(sequence),
                signer,
                tuple(approvers.split(",")) if approvers else (),
                int(generation) if generation else None,
                int(needed),
                reviewed == "1",
            )

    def get(self, commit: CommitHash) -> Accepted | None:
        return self.entries.get(commit)

    def add(self, accepted: Iterable[Accepted]) -> None:
        lines = []
        for entry in accepted:
            if entry.commit in self.entries:
                continue
            self.entries[entry.commit] = entry
            key, principal = (entry.signer.fingerprint, entry.signer.principal) if entry.signer else ("", "")
            generation = "" if entry.generation is None else str(entry.generation)
            approvers = ",".join(entry.approvers)
            verdict = f"{entry.needed}\t{int(entry.reviewed)}"
            lines.append(
                f"{entry.commit}\t{entry.sequence}\t{key}\t{principal}\t{generation}\t{approvers}\t{verdict}\n"
            )
        if lines:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write("".join(lines))
