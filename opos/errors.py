"""One error root whose messages are written for the person who must act.

Two branches, as in python-tuf: data that must not be trusted (a bad file, a bad signature, a
bad envelope), and the world failing us (a missing repository, an unreadable key file). The CLI
catches `OposError` in one place and prints `diagnostics()`.
"""

from __future__ import annotations

from dataclasses import dataclass


class OposError(Exception):
    """The root of every error OPOS raises on purpose."""

    def diagnostics(self) -> str:
        """A paragraph saying what happened and what to do about it."""
        return str(self)


class UntrustedDataError(OposError):
    """Input that failed a check: it must not be used."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a ledger file, located for the person who must fix it."""

    path: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class LedgerInvalid(UntrustedDataError):
    """The ledger's files break the schema, the rules or the policy."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in the ledger")

    def diagnostics(self) -> str:
        lines = [str(p) for p in self.problems]
        lines.append("Fix these and run `opos check` again.")
        return "\n".join(lines)


class HistoryRejected(UntrustedDataError):
    """Commits in the ledger's history failed signature verification, or history was rewritten."""

    def __init__(self, failures: list[tuple[str, str]]) -> None:
        self.failures = failures
        super().__init__(f"{len(failures)} commit(s) failed verification")

    def diagnostics(self) -> str:
        return "\n".join(f"{commit} {reason}" for commit, reason in self.failures)


class SignatureInvalid(UntrustedDataError):
    """A signature (SSHSIG or DSSE) did not verify."""


class EnvelopeInvalid(UntrustedDataError):
    """A DSSE envelope (feed or head) is malformed, mis-typed or fails its schema."""


class KeyInvalid(OposError):
    """A key file could not be read or is of a kind OPOS does not accept."""


class RepositoryError(OposError):
    """The git repository is missing, damaged, or does not have what was asked for."""


class BlobTooLarge(RepositoryError):
    """A file in the repository is larger than OPOS reads (refused from its header, before reading it)."""

    def __init__(self, blob_id: str, size: int, limit: int) -> None:
        super().__init__(f"file {blob_id} is {size} bytes; the limit is {limit}")
        self.size = size


class RepositoryDamaged(RepositoryError):
    """An object the repository should hold is missing or corrupt: a fresh clone is the remedy."""


class UsageError(OposError):
    """The command was asked for something it cannot do as given."""


class YamlProblem(UntrustedDataError):
    """Raised inside the loader; carries the Problem to report."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


class SignerUnknown(SignatureInvalid):
    """The signature's key is on no line of the allowed-signers file."""


class SignerNotValid(SignatureInvalid):
    """The key is allowed, but not at that time or not for that namespace."""


class ChainBroken(UntrustedDataError):
    """A key document that does not follow from the one trusted before it."""


class FetchFailed(OposError):
    """A mirror did not give a usable answer (unreachable, slow, too large, an HTTP error)."""
