"""Open connections per client address block, counted across every worker of one gunicorn.

A gevent worker holds thousands of connections cheaply, so capacity is not what one address may
take: one address that opens 4,400 slow connections would otherwise hold every door. Each worker
counts the connections it holds in its own row of a table in memory shared with its siblings (made
by the master before it forks, so no lock is needed: a row has one writer), and refuses a new
connection, at accept time and before any byte is read, when the rows' sum for that block is at the
limit. Blocks are hashed into a fixed number of buckets, keyed by the master's hash seed, so the
table's size does not depend on how many addresses ask; a collision can only make two blocks share
one limit.

Behind a proxy every connection comes from the proxy, so its addresses (OPOS_TRUSTED_PROXIES) are
exempt and the limit belongs in the proxy (deploy/nginx.conf: limit_conn).
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass

from webhook.addresses import Sources

BUCKETS = 16384


@dataclass(frozen=True)
class ConnectionPolicy:
    per_address: int  # 0: no limit
    sources: Sources


class SharedCounts:
    """Rows of BUCKETS counters in anonymous shared memory; a worker writes its own row only."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.memory = mmap.mmap(-1, rows * BUCKETS * 4)  # MAP_SHARED: the forked workers see one table
        self.cells = memoryview(self.memory).cast("I")

    def clear(self, row: int) -> None:
        start = row * BUCKETS
        self.cells[start : start + BUCKETS] = memoryview(bytes(BUCKETS * 4)).cast("I")

    def total(self, bucket: int) -> int:
        return sum(self.cells[row * BUCKETS + bucket] for row in range(self.rows))

    def add(self, row: int, bucket: int, change: int) -> None:
        index = row * BUCKETS + bucket
        self.cells[index] = max(0, self.cells[index] + change)


class AddressLimiter:
    """One worker's view: take a slot for a new connection (or refuse it), give it back when it ends."""

    def __init__(self, policy: ConnectionPolicy, counts: SharedCounts, row: int) -> None:
        self.policy = policy
        self.counts = counts
        self.row = row
        counts.clear(row)  # whatever the worker that had this row before left behind

    def bucket(self, peer: str) -> int | None:
        """The bucket that counts `peer`, or None when it is exempt (no limit, a trusted proxy, a Unix socket)."""
        if self.policy.per_address <= 0 or not peer or self.policy.sources.is_trusted(peer):
            return None
        return hash(self.policy.sources.key(peer)) % BUCKETS

    def take(self, bucket: int | None) -> bool:
        if bucket is None:
            return True
        if self.counts.total(bucket) >= self.policy.per_address:
            return False
        self.counts.add(self.row, bucket, 1)
        return True

    def give_back(self, bucket: int | None) -> None:
        if bucket is not None:
            self.counts.add(self.row, bucket, -1)
