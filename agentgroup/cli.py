"""The ``agentgroup`` command: one entry point, one subcommand per module.

Each module in :data:`SUBCOMMANDS` exposes ``register(subparsers)``, which adds its parser and sets
``func`` (``args -> exit status``). Only the module of the command being run is imported (the others
pull in servers and API clients), all of them for ``--help``. A module that is not part of this build
yet is left out; any other import error is a real bug and is raised.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Iterable
from importlib import metadata
from types import ModuleType

SUBCOMMANDS = {
    "webhook": "webhook.cli",
    "controller": "controller.cli",
    "certs": "certs.cli",
    "validate": "agentgroup.validate",
    "demo": "agentgroup.demo",
}
"""Command name -> the module that registers it."""
DEBUG_ENV = "AGENTGROUP_DEBUG"
"""Set to 1 to get the traceback of an unexpected error instead of a one-line message."""


def _version() -> str:
    try:
        return metadata.version("agentgroup")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def _subcommand_modules(names: Iterable[str]) -> list[ModuleType]:
    modules = []
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as err:
            # Only the module itself (or its not-yet-existing package) may be missing.
            if err.name is None or not (name == err.name or name.startswith(f"{err.name}.")):
                raise
    return modules


def parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with ``command``'s subcommand, or with every subcommand there is."""
    p = argparse.ArgumentParser(
        prog="agentgroup",
        description="Admission webhook, controller and tools for agentcube AgentGroups.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = p.add_subparsers(title="commands", metavar="COMMAND")
    modules = [SUBCOMMANDS[command]] if command in SUBCOMMANDS else SUBCOMMANDS.values()
    for module in _subcommand_modules(modules):
        module.register(subparsers)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # The top-level options take no value, so the first other word names the command.
    p = parser(next((a for a in argv if not a.startswith("-")), None))
    try:
        args = p.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, usage errors: argparse has printed them
        return exit_.code if isinstance(exit_.code, int) else 2
    if not hasattr(args, "func"):
        p.print_help(sys.stderr)
        return 2
    try:
        status: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `agentgroup validate ... | head`: the reader is gone
        # Python's documented recipe: point stdout at devnull so the flush at exit does not fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as err:
        if os.environ.get(DEBUG_ENV) == "1":
            raise
        print(
            f"agentgroup: internal error: {type(err).__name__}: {err}\n"
            f"This is a bug; run again with {DEBUG_ENV}=1 for the traceback and report it.",
            file=sys.stderr,
        )
        return 70
    return status
