"""Is a text an input of the kind a test takes: URLs with the schemes it accepts, domains, IP endpoints. Pure."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from opos.text import unsafe_characters

_DOMAIN_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$", re.I)


def input_error(nettest: Mapping[str, Any], text: str) -> str | None:
    """Why `text` is not an input of the kind the test takes, or None when it is one."""
    kind = nettest["input"]
    if unsafe_characters(text) or text != text.strip():
        return f"{text!r} has control or invisible characters, or white space around it"
    if kind != "keyword" and any(c.isspace() for c in text):
        return f"{text!r} has white space inside it"
    if kind == "url":
        return _url_error(text, nettest.get("schemes", ["http", "https"]))
    if kind == "domain":
        return None if is_domain(text) else f"{text!r} is not a domain name (like example.org)"
    if kind == "ip":
        try:
            ipaddress.ip_address(text)
        except ValueError:
            return f"{text!r} is not an IP address"
        return None
    if kind == "ip:port":
        return _endpoint_error(text)
    if kind == "keyword":
        return None if len(text) <= 200 else "a keyword is at most 200 characters"
    return f"this test takes no inputs, so {text!r} cannot be one"


def is_domain(text: str) -> bool:
    labels = text.rstrip(".").split(".")
    return len(text) <= 253 and len(labels) >= 2 and all(_DOMAIN_LABEL.match(label) for label in labels)


def _url_error(text: str, schemes: list[str]) -> str | None:
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as err:
        return f"{text!r} is not a URL: {err}"
    if parts.scheme not in schemes:
        return f"{text!r} must be a URL with scheme {' or '.join(s + '://' for s in schemes)}"
    host = parts.hostname or ""
    if not host:
        return f"{text!r} has no host"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not is_domain(host):
            return f"{text!r} has a host that is neither a domain name nor an IP address"
    if port == 0:
        return f"{text!r} has port 0"
    return None


def _endpoint_error(text: str) -> str | None:
    if ":" not in text:
        return f"{text!r} needs a port: write it as ip:port (like 1.2.3.4:443)"
    host, colon, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        return f"{text!r}: write an IPv6 endpoint as [address]:port"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return f"{text!r} is not an endpoint ip:port (like 1.2.3.4:443 or [2001:db8::1]:443)"
    if not colon or not port.isdigit() or not 0 < int(port) < 65536:
        return f"{text!r} needs a port from 1 to 65535"
    return None
