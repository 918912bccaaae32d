"""The OPOS probe client: fetch the feed from mirrors, trust nothing unsigned, keep working offline.

    from opos.probe import ClientConfig, Mirror, poll
    config = ClientConfig(mirrors=[Mirror("https://mirror.example/opos")], keys=[public_key],
                          country="IR", network="AS197207", state_dir=Path("state"))
    plan = poll(config)   # never raises for a mirror's fault; plan.to_json() is schemas/plan.schema.json

The transport is a `Fetcher` (HttpFetcher by default), which owns the size caps and the deadline.
docs/client.md specifies every step precisely enough to port it.
"""

from opos.probe.poll import ClientConfig, poll
from opos.probe.verify import Pin, Rejected, SplitView
from opos.transport import Fetcher, FetchFailed, HttpFetcher, Limits, Mirror

__all__ = [
    "ClientConfig",
    "FetchFailed",
    "Fetcher",
    "HttpFetcher",
    "Limits",
    "Mirror",
    "Pin",
    "Rejected",
    "SplitView",
    "poll",
]
