"""How the benchmark measures: repeated runs, child processes timed with their peak memory, figures.

A figure is a list of samples (seconds, bytes, or requests per second) with its reference from
the same run, a target and the direction in which it is better; the report shows min, median
and max and whether the median meets the target.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Unit = Literal["s", "ms", "MB", "req/s", "claims/s"]


@dataclass
class Figure:
    name: str
    setting: str
    unit: Unit
    samples: list[float]
    target: float | None = None
    better: Literal["lower", "higher"] = "lower"
    reference: str = ""  # what the reference is
    reference_samples: list[float] = field(default_factory=list)
    target_is_ratio: bool = False  # the target is a share of the reference (head poll, feed)
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def ratio(self) -> float | None:
        if not self.reference_samples:
            return None
        reference = statistics.median(self.reference_samples)
        return self.median / reference if reference else None

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        value = self.ratio if self.target_is_ratio else self.median
        if value is None:
            return None
        return value <= self.target if self.better == "lower" else value >= self.target


class BenchFailed(Exception):
    pass


def run_child(command: Sequence[str | Path], env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[
    float, int, str
]:  # fmt: skip
    """Run a command to its end: (wall seconds, peak resident bytes, standard output). Raises BenchFailed."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(
            [str(part) for part in command], stdout=out, stderr=err, env={**os.environ, **(env or {})}, cwd=cwd
        )
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            raise BenchFailed(f"{' '.join(map(str, command))} failed ({process.returncode}):\n{err.read().decode()}")
        return seconds, usage.ru_maxrss * 1024, out.read().decode()


def repeat(times: int, action: Callable[[], float]) -> list[float]:
    return [action() for _ in range(times)]


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def resident_bytes() -> int:
    """This process's resident memory now (not its peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
