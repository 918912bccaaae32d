"""Publishing's errors."""

from __future__ import annotations

from collections.abc import Sequence

from opos.errors import OposError


class CosignaturesMissing(OposError):
    """Too few auditors cosigned: the new head waits, the previous one stays served."""

    def __init__(self, message: str, alarms: Sequence[str]) -> None:
        super().__init__(message)
        self.alarms = list(alarms)
