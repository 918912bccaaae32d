"""The benchmark command works (run small): every figure of docs/performance.md is produced.

It asserts no duration: `--quick` only checks that each row is measured and written, so that the
benchmark cannot rot between full runs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROWS = ("first render", "render of a warm clone, nothing changed", "re-render after one change", "`opos check`",
        "cold verify", "long history: time", "long history: peak memory", "log query", "leader memory", "head poll",
        "feed download", "push → served", "push → probe plan", "client poll", "claims (SQLite)",
        "push → served through the OONI Run bridge", "machine speed")  # fmt: skip


@pytest.mark.slow
def test_the_benchmark_runs_and_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "performance.md"
    result = subprocess.run(
        [sys.executable, ROOT / "bench" / "run.py", "--quick", "--repeat", "1", "--out", out],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text()
    for row in ROWS:
        assert f"| {row}" in text, row
    assert "NOT EXACT" not in text  # every claims cap was kept exactly
    assert "ncalls" in text  # the profile of a first render is there
