"""Who is asking: the source address of a request, and what it is allowed.

The address is the peer's, or, when the peer is one of the configured proxies, the nearest address
in X-Forwarded-For that is not a trusted proxy (walking from the right: every address further
left could have been written by the client). IPv4 addresses count one by one; IPv6 by /64, since
one host commonly holds a whole /64.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

import limits
import maxminddb

from webhook.feed_service.config import Config
from webhook.feed_service.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_proxies(text: str) -> tuple[Network, ...]:
    try:
        return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())
    except ValueError as err:
        raise ConfigError(f"OPOS_TRUSTED_PROXIES: {err} (a comma-separated list of CIDRs, like 10.0.0.0/8)") from None


def parse_rate(text: str) -> tuple[int, int] | None:
    """`30/minute` (the limits notation) → (30, 60); `0` → None (no limit)."""
    if text.strip() in ("", "0"):
        return None
    try:
        item = limits.parse(text)
    except ValueError as err:
        raise ConfigError(f"OPOS_CLAIMS_RATE {text!r}: {err} (like 30/minute or 100/hour; 0 for none)") from None
    return item.amount, item.get_expiry()


@dataclass(frozen=True)
class Sources:
    trusted: tuple[Network, ...]

    @classmethod
    def from_config(cls, config: Config) -> Sources:
        return cls(parse_proxies(config.trusted_proxies))

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted)

    def client(self, peer: str | None, forwarded_for: str | None) -> str:
        """The client's address (a string), believing X-Forwarded-For only from trusted proxies."""
        address = peer or ""
        if forwarded_for and self._trusted(address):
            for hop in reversed([part.strip() for part in forwarded_for.split(",")]):
                address = hop
                if not self._trusted(hop):
                    break
        return address

    @staticmethod
    def key(address: str) -> str:
        """What limits count: the IPv4 address, or the IPv6 /64 (anything unparseable counts as itself)."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return address[:64]
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.ipv4_mapped is not None:
                return str(ip.ipv4_mapped)
            return str(ipaddress.ip_network(f"{ip}/64", strict=False))
        return str(ip)


class AsnDatabase:
    """An ASN database in MaxMind DB format (GeoLite2-ASN or DB-IP's): which network an address is in."""

    def __init__(self, path: Any) -> None:
        try:
            self.reader = maxminddb.open_database(str(path))
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as err:
            raise ConfigError(f"OPOS_ASN_DB {path}: not a readable MaxMind DB ({err})") from err

    def network_of(self, address: str) -> str | None:
        """`AS<n>` for the address, or None when the database does not know it."""
        try:
            record = self.reader.get(address)
        except ValueError:
            return None
        number = record.get("autonomous_system_number") if isinstance(record, dict) else None
        return f"AS{number}" if isinstance(number, int) else None

    def close(self) -> None:
        self.reader.close()
