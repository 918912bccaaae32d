"""What a claim's source address is allowed: its block (webhook.addresses), its rate, and where it is.

The ASN and country databases are MaxMind DB files (GeoLite2-ASN, GeoLite2-Country or -City, or
DB-IP's equivalents). An address a database does not know is allowed: the databases narrow what a
lying probe can claim, they never refuse a real probe for a gap in their coverage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import limits
import maxminddb

from webhook.addresses import AddressSettingError, Sources, parse_proxies
from webhook.feed_service.config import Config
from webhook.feed_service.errors import ConfigError


def sources_from_config(config: Config) -> Sources:
    try:
        return Sources(parse_proxies(config.trusted_proxies), config.claims_ipv4_prefix, config.claims_ipv6_prefix)
    except AddressSettingError as err:
        raise ConfigError(str(err)) from None


def parse_rate(text: str) -> tuple[int, int] | None:
    """`30/minute` (the limits notation) → (30, 60); `0` → None (no limit)."""
    if text.strip() in ("", "0"):
        return None
    try:
        item = limits.parse(text)
    except ValueError as err:
        raise ConfigError(f"OPOS_CLAIMS_RATE {text!r}: {err} (like 30/minute or 100/hour; 0 for none)") from None
    return item.amount, item.get_expiry()


class _MaxMindDatabase:
    setting = ""

    def __init__(self, path: Path) -> None:
        try:
            self.reader = maxminddb.open_database(str(path))
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as err:
            raise ConfigError(f"{self.setting} {path}: not a readable MaxMind DB ({err})") from err

    def _record(self, address: str) -> dict[str, Any]:
        try:
            record = self.reader.get(address)
        except ValueError:
            return {}
        return record if isinstance(record, dict) else {}

    def close(self) -> None:
        self.reader.close()


class AsnDatabase(_MaxMindDatabase):
    """Which network an address is in."""

    setting = "OPOS_ASN_DB"

    def network_of(self, address: str) -> str | None:
        """`AS<n>` for the address, or None when the database does not know it."""
        number = self._record(address).get("autonomous_system_number")
        return f"AS{number}" if isinstance(number, int) else None


class CountryDatabase(_MaxMindDatabase):
    """Which country an address is in (a country or a city database)."""

    setting = "OPOS_COUNTRY_DB"

    def country_of(self, address: str) -> str | None:
        """The ISO code for the address, or None when the database does not know it."""
        country = self._record(address).get("country")
        code = country.get("iso_code") if isinstance(country, dict) else None
        return code.upper() if isinstance(code, str) else None
