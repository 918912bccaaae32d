"""The house's size bars: no module over 400 lines, no function over 50, outside tests, bench and the demo.

Prints every offender (path:line: what, how long) and exits 1 when there is any; `./dev.sh test` runs it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULE_LINES = 400
FUNCTION_LINES = 50
# the demo is a script that tells a story, step by step
LEFT_OUT = {"opos/cli/demo.py", "opos/cli/_demo_ledger.py", "opos/cli/_demo_service.py"}


def offenders(path: Path) -> list[str]:
    relative = path.relative_to(ROOT).as_posix()
    text = path.read_text(encoding="utf-8")
    found = []
    lines = len(text.splitlines())
    if lines > MODULE_LINES:
        found.append(f"{relative}:1: module of {lines} lines (at most {MODULE_LINES})")
    for node in ast.walk(ast.parse(text, relative)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno is not None:
            length = node.end_lineno - node.lineno + 1
            if length > FUNCTION_LINES:
                found.append(f"{relative}:{node.lineno}: function {node.name} of {length} lines (at most "
                             f"{FUNCTION_LINES})")  # fmt: skip
    return found


def main() -> int:
    paths = sorted(p for folder in ("opos", "webhook") for p in (ROOT / folder).rglob("*.py"))
    found = [line for path in paths if path.relative_to(ROOT).as_posix() not in LEFT_OUT for line in offenders(path)]
    for line in found:
        print(line)
    print(f"sizes: {len(found)} offender(s) in {len(paths)} modules" if found else f"sizes: ok ({len(paths)} modules)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
