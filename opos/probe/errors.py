"""The probe's refusals: what a mirror sent must not be used, and why."""

from __future__ import annotations

from opos.errors import UntrustedDataError


class Rejected(UntrustedDataError):
    """A head or feed that must not be used; the message says why."""


class SplitView(Rejected):
    """Two validly signed heads with the same sequence and different commits."""
