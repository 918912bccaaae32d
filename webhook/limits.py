"""Every fixed limit of the web services, in one place (what an operator sets is the configuration's).

The body's size is the configuration's `max_body_bytes` for the feed service; these are the rest.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceLimits:
    body_seconds: float = 10.0  # the longest a client may take to send a request body (408 after it)
    auditor_feed_bytes: int = 4 * 1024 * 1024  # the largest feed an auditor is asked to cosign (413 past it)
    log_page: int = 1000  # the most events one page of /v1/log.json may ask for (`limit`)
    delivery_id_length: int = 100  # a webhook's X-GitHub-Delivery, as much as is remembered
    site_files_kept: int = 256  # small site files (head, keys) each worker keeps in memory


LIMITS = ServiceLimits()
