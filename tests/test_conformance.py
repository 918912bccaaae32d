"""The conformance kit, played against OPOS's own client, and against mutants of it that each lack one defence.

A mutant is a copy of the `opos` package with one check removed; the kit must fail it on the
scenarios that protect that check, and on no other scenario of the family played.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from opos.conformance import runner
from servers import ROOT

pytestmark = pytest.mark.slow
CLIENT = [sys.executable, "-m", "opos", "conformance-client"]


def test_opos_passes_every_scenario_and_each_is_documented(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "opos", "conformance", "run", "--client", " ".join(CLIENT),
                           "--report", str(report)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:]
    results = json.loads(report.read_text())["scenarios"]
    assert len(results) >= 60 and {r["result"] for r in results} == {"pass"}
    documented = (ROOT / "docs" / "conformance.md").read_text()
    for result in results:
        assert f"`{result['scenario']}`" in documented, result["scenario"]


def test_a_declared_failure_is_an_xfail_and_an_undeclared_one_fails(tmp_path: Path) -> None:
    xfail = tmp_path / "xfail.txt"
    xfail.write_text("trust/rollback  # this port does not pin sequences yet\n")
    broken = ["false"]  # a client that never answers a poll: every scenario fails
    results = runner.run(broken, tmp_path / "work", "trust/rollback,trust/freeze", frozenset({"trust/rollback"}))
    assert [(r.name, r.outcome) for r in results] == [("trust/freeze", "fail"), ("trust/rollback", "xfail")]
    command = [sys.executable, "-m", "opos", "conformance", "run", "--client", "false", "--only", "trust/rollback",
               "--xfail", str(xfail)]  # fmt: skip
    listed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "xfail" in listed.stdout


MUTANTS = {
    # name: (file, the check, what replaces it, scenarios played, those that must fail)
    "rollback": ("opos/probe/verify.py", "if head.sequence < pin.sequence:", "if False:",
                 "trust/rollback,state/no-going-back-after-restart,trust/split-view,honest/new-commit",
                 {"trust/rollback", "state/no-going-back-after-restart"}),
    "expiry": ("opos/probe/verify.py", "if head.expired(now, skew):", "if False:",
               "trust/freeze,honest/unchanged,honest/offline-cache", {"trust/freeze"}),
    "split view": ("opos/probe/verify.py", "if head.sequence == pin.sequence and head.commit != pin.commit:",
                   "if False:", "trust/split-view,trust/rollback,honest/unchanged", {"trust/split-view"}),
    "head digest": ("opos/probe/verify.py", "if hashlib.sha256(data).hexdigest() != head.feed_sha256:", "if False:",
                    "trust/feed-digest,trust/mix-and-match,honest/first-poll", {"trust/feed-digest"}),
    "key-document chain": ("opos/probe/keyring.py", "document = keydoc.following(document, data)",
                           "document = keydoc.read(data)[1]", "keys/*",
                           {"keys/skipped-version", "keys/threshold-one-key-twice"}),
    "cosignature count": ("opos/probe/trusted.py", "cosignature.require(data, statement, self.auditors, "
                          "self.auditors_required)", "cosignature.require(data, statement, self.auditors, "
                          "min(1, self.auditors_required))", "auditors/*",
                          {"auditors/k-minus-one", "auditors/one-twice"}),
    "deadline": ("opos/transport.py", 'deadline = Deadline(self.limits.total_seconds)\n        with self._open("GET"',
                 'deadline = Deadline(10**6)\n        with self._open("GET"',
                 "transport/trickle-body,transport/endless", {"transport/trickle-body"}),
}  # fmt: skip


@pytest.mark.parametrize("defence", sorted(MUTANTS))
def test_the_kit_fails_a_client_without_the_defence(tmp_path: Path, defence: str) -> None:
    path, check, replacement, played, failing = MUTANTS[defence]
    mutant = tmp_path / "mutant"
    shutil.copytree(ROOT / "opos", mutant / "opos", ignore=shutil.ignore_patterns("__pycache__"))
    (mutant / "schemas").symlink_to(ROOT / "schemas")  # the package finds its schemas beside it
    source = (mutant / path).read_text()
    assert source.count(check) == 1, f"the check to remove is not where the mutant expects it: {check}"
    (mutant / path).write_text(source.replace(check, replacement))
    client = ["env", "-C", str(mutant), f"PYTHONPATH={mutant}", *CLIENT]  # cwd first on sys.path: the mutant
    results = runner.run(client, tmp_path / "work", played)
    failed = {r.name for r in results if r.outcome == "fail"}
    assert failed == failing, [(r.name, r.outcome, r.detail) for r in results]
