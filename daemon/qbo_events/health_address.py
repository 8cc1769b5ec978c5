"""The running daemon's health address, kept in state_dir for `status` when the config breaks."""

from __future__ import annotations

import contextlib
import os
import re
import tomllib
from pathlib import Path
from typing import Final

from qbo_events.config import Config, parse_listen

FILE: Final = "health_address"
# `state_dir = "..."` at the top of a file that TOML can no longer parse as a whole.
_STATE_DIR_LINE: Final = re.compile(r"""^\s*state_dir\s*=\s*(["'])(.*?)\1\s*(?:#.*)?$""", re.M)


def write(state_dir: str | Path, address: str) -> None:
    """Replace the file in one rename, owner-only like everything in state_dir."""
    path = Path(state_dir) / FILE
    scratch = path.with_name(f".{FILE}.{os.getpid()}")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(address + "\n")
    os.replace(scratch, path)


def read(state_dir: str | Path) -> str | None:
    """The address recorded, or None when there is none that `host:port` parses."""
    try:
        address = (Path(state_dir) / FILE).read_text(encoding="utf-8").strip()
        parse_listen(address)
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return address


def state_dir_of(config_path: Path) -> Path:
    """Best guess at the state_dir a config file names, when the file does not load: its
    `state_dir` if that much can be read, else the default, relative to the file as `load` does."""
    text = ""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        text = config_path.read_text(encoding="utf-8")
    value: object = None
    try:
        value = tomllib.loads(text).get("state_dir")
    except tomllib.TOMLDecodeError:
        # Only a top-level key counts: before the first [table] header.
        head = re.split(r"^\s*\[", text, maxsplit=1, flags=re.M)[0]
        match = _STATE_DIR_LINE.search(head)
        value = match.group(2) if match else None
    state_dir = value if isinstance(value, str) else Config().state_dir
    return Path(os.path.normpath(config_path.resolve().parent / state_dir))
