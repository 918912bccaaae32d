"""Who is asking: the source address of a request, and the block it is counted in.

The address is the peer's, or, when the peer is one of the configured proxies, the nearest address
in X-Forwarded-For that is not a trusted proxy (walking from the right: every address further
left could have been written by the client). Limits count blocks, not addresses: an IPv4 address
by itself (a /32 unless told otherwise), IPv6 by /48, since a tunnel broker hands anyone a /48
for free and one host commonly holds a whole /64.

Both web services use it: the feed service for claims and connections, the auditor for connections.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass

from opos.errors import OposError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class AddressSettingError(OposError):
    """An address setting (proxies, prefixes, the per-address limit) that cannot be used."""


def parse_proxies(text: str) -> tuple[Network, ...]:
    try:
        return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())
    except ValueError as err:
        raise AddressSettingError(
            f"OPOS_TRUSTED_PROXIES: {err} (a comma-separated list of CIDRs, like 10.0.0.0/8)"
        ) from None


def check_prefix(name: str, prefix: int, bits: int) -> int:
    if not 1 <= prefix <= bits:
        raise AddressSettingError(f"{name}: {prefix} is not a prefix length (1 to {bits})")
    return prefix


@dataclass(frozen=True)
class Sources:
    trusted: tuple[Network, ...] = ()
    ipv4_prefix: int = 32
    ipv6_prefix: int = 48

    def __post_init__(self) -> None:
        check_prefix("OPOS_CLAIMS_IPV4_PREFIX", self.ipv4_prefix, 32)
        check_prefix("OPOS_CLAIMS_IPV6_PREFIX", self.ipv6_prefix, 128)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Sources:
        """The settings the auditor (which has no configuration file) takes from OPOS_* variables."""
        environ = os.environ if environ is None else environ
        return cls(
            parse_proxies(environ.get("OPOS_TRUSTED_PROXIES", "")),
            _whole("OPOS_CLAIMS_IPV4_PREFIX", environ.get("OPOS_CLAIMS_IPV4_PREFIX", "32")),
            _whole("OPOS_CLAIMS_IPV6_PREFIX", environ.get("OPOS_CLAIMS_IPV6_PREFIX", "48")),
        )

    def is_trusted(self, address: str) -> bool:
        if not self.trusted:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted)

    def client(self, peer: str | None, forwarded_for: str | None) -> str:
        """The client's address (a string), believing X-Forwarded-For only from trusted proxies."""
        address = peer or ""
        if forwarded_for and self.is_trusted(address):
            for hop in reversed([part.strip() for part in forwarded_for.split(",")]):
                address = hop
                if not self.is_trusted(hop):
                    break
        return address

    def key(self, address: str) -> str:
        """What limits count: the address's block, as a network (anything unparseable counts as itself)."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return address[:64]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if isinstance(ip, ipaddress.IPv6Address):
            return str(ipaddress.ip_network(f"{ip}/{self.ipv6_prefix}", strict=False))
        if self.ipv4_prefix == 32:
            return str(ip)
        return str(ipaddress.ip_network(f"{ip}/{self.ipv4_prefix}", strict=False))


def _whole(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise AddressSettingError(f"{name}: {text!r} is not a whole number") from None
