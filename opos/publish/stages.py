"""How long each stage of a sync took, for its log line: where a push's time to be served goes."""

from __future__ import annotations

import time


class Stages:
    """A stopwatch that names its laps: `mark("fetch")` ends the stage that began at the last mark."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def mark(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._last
        self._last = now

    def __str__(self) -> str:
        return ", ".join(f"{stage} {seconds * 1000:.0f} ms" for stage, seconds in self.seconds.items())
