"""An auditor's refusals: 422 (not the ledger) and 409 (it contradicts what was cosigned)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from opos.errors import OposError

if TYPE_CHECKING:
    from opos.audit.auditing import LogEntry


class AuditRefused(OposError):
    """The feed is not the public ledger (or its history does not verify): 422, exit 1."""


class AuditConflict(OposError):
    """The feed contradicts what this auditor cosigned before: the split-view alarm. 409, exit 3."""

    def __init__(self, message: str, latest: LogEntry) -> None:
        super().__init__(message)
        self.latest = latest


class AuditLogDamaged(OposError):
    """The auditor's own log cannot be read: it cosigns nothing until the log is restored (503; exit 2)."""
