"""The feed service's errors: its configuration, and its claims database."""

from __future__ import annotations

from opos.errors import OposError


class ConfigError(OposError):
    """The service's configuration is incomplete or wrong."""


class ClaimsUnavailable(OposError):
    """The claims database cannot be reached or used."""
