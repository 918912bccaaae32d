"""The OPOS probe client: fetch the feed from mirrors, trust nothing unsigned, keep working offline.

    from opos.probe import ClientConfig, Mirror, TrustAnchors, poll
    config = ClientConfig(mirrors=[Mirror("https://mirror.example/opos")], trust=TrustAnchors(keys=(public_key,)),
                          country="IR", network="AS197207", state_dir=Path("state"))
    plan = poll(config)   # never raises for a mirror's fault; plan.to_json() is schemas/plan.schema.json

What the operator chose is the ClientConfig; what is pinned (feed keys, or root keys, and auditors)
is its `trust`. What is trusted during a poll is one TrustedState (trusted.py), updated step by
step; planning (plan.py) is pure and claiming (claims.py) is its own step. The transport is a
`Fetcher` (HttpFetcher by default, opos.transport), which owns the size caps and the deadline.
docs/client.md specifies every step precisely enough to port it.
"""

from opos.errors import FetchFailed
from opos.probe.errors import Rejected, SplitView
from opos.probe.poll import ClientConfig, poll
from opos.probe.trusted import TrustAnchors, TrustedState
from opos.probe.verify import Pin
from opos.transport import Fetcher, HttpFetcher, Limits, Mirror

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
    "TrustAnchors",
    "TrustedState",
    "poll",
]
