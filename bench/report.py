"""docs/performance.md from the figures of one run: the table, the profile of the slowest path, the analysis."""

from __future__ import annotations

import datetime as dt
import statistics
from pathlib import Path

from measure import Figure

ANALYSIS = Path(__file__).resolve().parent / "analysis.md"


def _number(value: float, unit: str) -> str:
    if unit in ("req/s", "claims/s", "MB") or value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}"


def _target(figure: Figure) -> str:
    if figure.target is None:
        return "—"
    sign = "≤" if figure.better == "lower" else "≥"
    if figure.target_is_ratio:
        return f"{sign} {figure.target:.0%} of the reference"
    return f"{sign} {_number(figure.target, figure.unit)} {figure.unit}"


def _verdict(figure: Figure) -> str:
    return {True: "met", False: "**missed**", None: "—"}[figure.met]


def _reference(figure: Figure) -> str:
    if not figure.reference_samples:
        return "—"
    median = statistics.median(figure.reference_samples)
    ratio = figure.ratio
    share = f" (ours {ratio:.0%})" if figure.target_is_ratio and ratio is not None else ""
    times = f" (×{ratio:.1f})" if not figure.target_is_ratio and ratio is not None else ""
    return f"{figure.reference}: {_number(median, figure.unit)} {figure.unit}{share}{times}"


def table(figures: list[Figure]) -> str:
    lines = [
        "| figure | setting | min | median | max | reference, same run | target | |",
        "|---|---|---:|---:|---:|---|---|---|",
    ]
    for f in figures:
        low, mid, high = min(f.samples), f.median, max(f.samples)
        note = f"<br>{f.note}" if f.note else ""
        lines.append(
            f"| {f.name} | {f.setting}{note} | {_number(low, f.unit)} | **{_number(mid, f.unit)} {f.unit}** | "
            f"{_number(high, f.unit)} | {_reference(f)} | {_target(f)} | {_verdict(f)} |"
        )
    return "\n".join(lines)


def markdown(figures: list[Figure], machine: str, seconds: float, quick: bool, repeat: int, profile: str) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    kind = "a full run"
    if quick:
        kind = "a --quick run (small ledgers: it shows the benchmark works, not how fast OPOS is)"
    analysis = ANALYSIS.read_text() if ANALYSIS.exists() else ""
    return f"""# Performance

Written by `./dev.sh bench` (`bench/run.py`): {kind}, {when}, {seconds / 60:.0f} minutes, each figure
run {repeat} times or more (min, median and max below). Every figure is measured beside its
reference in the same run on the same machine, and every server listened on 127.0.0.1 only.
Tests never assert a duration: this page is where speed is measured. Figures vary between runs on
this machine, by up to a quarter for the command-line ones.

**Machine:** {machine}. wrk, the probes and the clients ran on the same cores as the service, so
throughput figures are a floor.

{table(figures)}

## Where the time of a first render goes

A profile (cProfile, cumulative time, so nested calls overlap) of one first render of the
largest ledger above, in the same run:

```
{profile}
```

{analysis}"""
