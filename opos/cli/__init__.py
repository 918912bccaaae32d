"""The `opos` command: argument parsing and output only; the library does the work.

Each command group declares its commands, their arguments and their handlers together
(`register`); `run(argv, stdout, stderr)` returns the exit code, so tests call it in-process.
Errors raised on purpose (OposError) print their diagnosis; nothing a user can type produces a
traceback.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from typing import TextIO

from opos import __version__
from opos.cli import (
    auditor,
    claims,
    conformance,
    demo,
    keydocs,
    ledgerinit,
    probe,
    publishing,
    review,
    service,
    staff,
    transparency,
)
from opos.cli._common import Parser
from opos.errors import OposError, UsageError
from opos.instructions import judging

GROUPS = (
    ledgerinit,
    staff,
    review,
    publishing,
    keydocs,
    transparency,
    auditor,
    service,
    claims,
    probe,
    conformance,
    demo,
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="opos",
        description="OPOS, the OONI Probe Orchestration System: instructions for OONI probes, kept as YAML in a "
        "git repository with signed commits, published as a signed feed.",
        epilog="Run `opos COMMAND --help` for each command.",
    )
    parser.add_argument("--version", action="version", version=f"opos {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for group in GROUPS:
        group.register(commands)
    return parser


def command_names(parser: argparse.ArgumentParser) -> list[str]:
    """Every command the parser knows, in the order of `opos --help`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


def run(argv: Sequence[str], stdout: TextIO, stderr: TextIO) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv))
        if args.command is None:
            parser.print_help(stdout)
            return 2
        return int(args.handler(args, stdout, stderr))
    except BrokenPipeError:  # `opos log | head`: the reader has what it wanted
        return 0
    except UsageError as err:
        print(err.diagnostics(), file=stderr)
        return 2
    except OposError as err:
        print(err.diagnostics(), file=stderr)
        return 1
    except OSError as err:
        where = f" {err.filename}" if err.filename else ""
        print(f"opos: cannot access{where}: {err.strerror or err}", file=stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # a bug: say so plainly, keep the traceback for those who ask
        print(f"opos: internal error: {type(err).__name__}: {err}. Please report it.", file=stderr)
        if os.environ.get("OPOS_DEBUG"):
            traceback.print_exc(file=stderr)
        else:
            print("Set OPOS_DEBUG=1 to see the traceback.", file=stderr)
        return 70


def main() -> None:
    # Ctrl-C (SIGINT) stops the long-running commands (probe --watch, demo --serve) cleanly, also when
    # the shell that started us in the background set SIGINT to be ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # A command builds many small objects (parsed YAML, instructions) that live until it ends: the
    # cyclic collector, run every 700 allocations, spent an eighth of a 10,000-file render walking
    # them. Modules imported by now live as long as the process, so it need not walk those at all.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    judging.use_cores()  # a command runs alone: a first check of a large ledger uses every core
    code = run(sys.argv[1:], sys.stdout, sys.stderr)
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # nothing more can be said to a closed pipe; say nothing on the way out either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(code)
