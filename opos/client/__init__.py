"""The OPOS probe client: fetch the feed from mirrors, trust nothing unsigned, keep working offline.

    from opos.client import ClientConfig, Mirror, poll
    config = ClientConfig(mirrors=[Mirror("https://mirror.example/opos")], keys=[public_key],
                          country="IR", network="AS197207", state_dir=Path("state"))
    plan = poll(config)   # a dict as in schemas/plan.schema.json; never raises for a mirror's fault

docs/client.md specifies every step precisely enough to port it.
"""

from opos.client.fetch import FetchFailed, Limits, Mirror
from opos.client.poll import ClientConfig, poll
from opos.client.verify import Pin, Rejected, SplitView

__all__ = ["ClientConfig", "FetchFailed", "Limits", "Mirror", "Pin", "Rejected", "SplitView", "poll"]
