"""Run in a child process by bench/run.py, so that its time and memory are its own.

    first-sync  REMOTE DATA_DIR FEED_KEY           a new service instance's first sync
    leader      REMOTE DATA_DIR FEED_KEY LEDGER.json SYNCS   the sync leader's memory over many syncs

Each prints one JSON object on standard output.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cryptography.hazmat.primitives.asymmetric import ed25519
from ledgers import BenchLedger
from measure import resident_bytes

from opos.model import CommitHash
from webhook import create_app


def _app(remote: str, data_dir: str, feed_key: str):  # type: ignore[no-untyped-def]
    settings = {"remote": remote, "data_dir": data_dir, "feed_key": feed_key, "follow": False}
    return create_app(settings)


def first_sync(remote: str, data_dir: str, feed_key: str) -> None:
    app = _app(remote, data_dir, feed_key)
    started = time.perf_counter()
    result = app.extensions["opos"].syncer.sync()
    seconds = time.perf_counter() - started
    print(json.dumps({"outcome": result.outcome, "seconds": seconds, "detail": result.detail}))


def leader(remote: str, data_dir: str, feed_key: str, ledger_file: str, syncs: int) -> None:
    described = json.loads(Path(ledger_file).read_text())
    bench = BenchLedger(
        Path(described["path"]), ed25519.Ed25519PrivateKey.from_private_bytes(bytes.fromhex(described["key"])),
        described["instructions"], tuple(described["window"]), CommitHash(described["head"]),
        described["when"], described["step"],
    )  # fmt: skip
    syncer = _app(remote, data_dir, feed_key).extensions["opos"].syncer
    outcomes = [syncer.sync().outcome]
    gc.collect()
    after_first = resident_bytes()
    samples = []
    for number in range(syncs):
        bench.change()
        outcomes.append(syncer.sync().outcome)
        if (number + 1) % max(syncs // 5, 1) == 0:
            gc.collect()
            samples.append(resident_bytes())
    bad = [o for o in outcomes if o != "published"]
    print(json.dumps({"after_first": after_first, "samples": samples, "bad": bad[:3]}))


if __name__ == "__main__":
    match sys.argv[1:]:
        case ["first-sync", remote, data_dir, feed_key]:
            first_sync(remote, data_dir, feed_key)
        case ["leader", remote, data_dir, feed_key, ledger_file, syncs]:
            leader(remote, data_dir, feed_key, ledger_file, int(syncs))
        case _:
            sys.exit(__doc__)
