"""What the deployment check asks the release binary itself, instead of re-implementing it: does
`sessionkeeper <command> <args> --help` accept these flags and values (clap parses every flag and
value, with the binary's own parsers, before it prints the help), which variables does a command
read (`[env: NAME]` in its --help), and what is a flag's default."""

from __future__ import annotations

import functools
import re
from pathlib import Path

from .common import run_binary


@functools.cache
def help_text(binary: Path, command: str) -> str:
    proc = run_binary(binary, *([command] if command else []), "--help")
    if proc.returncode != 0:
        raise RuntimeError(f"`sessionkeeper {command} --help` failed: {proc.stderr.strip()}")
    return proc.stdout


def env_vars(binary: Path, command: str) -> set[str]:
    return set(re.findall(r"\[env: ([A-Z0-9_]+)", help_text(binary, command)))


def default_of(binary: Path, command: str, flag: str) -> str | None:
    m = re.search(rf"--{re.escape(flag)} [^\n]*\n\s+[^\n]*\[default: ([^\]]+)\]", help_text(binary, command))
    return m.group(1) if m else None


def subcommands(binary: Path) -> list[str]:
    section = re.search(r"Commands:\n((?:  .*\n)+)", help_text(binary, ""))
    return [line.split()[0] for line in section.group(1).splitlines()] if section else []


def args_refusal(binary: Path, args: list[str]) -> str | None:
    """None when the binary's parser accepts `args` (a subcommand and its flags), else its error."""
    proc = run_binary(binary, *args, "--help")
    return None if proc.returncode == 0 else (proc.stderr.strip() or f"exit {proc.returncode}")
