"""The two file formats of ``walrus export``: TOML tables and JSON Lines, read strictly.

A reader raises InvalidInput naming the file (and line) at the first problem, so an import
can refuse before it writes anything.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from walrus_tasks.errors import InvalidInput, WalrusError


def without_none(value: Any, where: str) -> Any:
    """``value`` with every None dict value left out (TOML has no null; absent means None)."""
    if isinstance(value, dict):
        return {k: without_none(v, where) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        if any(v is None for v in value):
            raise WalrusError(f"{where}: a list holds null, which TOML cannot store")
        return [without_none(v, where) for v in value]
    return value


def toml_text(header: str, data: dict[str, Any]) -> str:
    """``data`` as TOML under ``header`` as comment lines."""
    return "".join(f"# {line}\n" for line in header.splitlines()) + "\n" + tomli_w.dumps(data)


def load_toml(root: Path, rel: str) -> dict[str, Any]:
    """Parse ``root/rel``; InvalidInput when it is missing or not TOML."""
    path = root / rel
    if not path.is_file():
        raise InvalidInput(f"{path} is missing: not a walrus export directory?")
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InvalidInput(f"{path}: not valid TOML ({e})") from e


def toml_tables(root: Path, rel: str, name: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    """``data[name]``, which must be an array of tables (absent: empty)."""
    items = data.get(name, [])
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise InvalidInput(f"{root / rel}: {name} must be an array of tables ([[{name}]])")
    return items


def write_jsonl(path: Path, lines: list[str]) -> None:
    """Write ``lines`` (JSON texts), each ended by a newline."""
    if any("\n" in line for line in lines):  # JSON never does, but a line is one record
        raise WalrusError(f"{path}: a stored record spans lines")
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def read_jsonl(path: Path) -> list[str]:
    """The lines of ``path``, exactly as written; InvalidInput unless each is a JSON object."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInput(f"{path}: cannot read it ({e})") from e
    lines = text.split("\n")  # not splitlines(): U+2028 and friends may sit inside a record
    if lines.pop() != "":
        raise InvalidInput(f"{path}: the last line has no newline (truncated file?)")
    for n, line in enumerate(lines, 1):
        try:
            ok = isinstance(json.loads(line), dict)
        except ValueError:
            ok = False
        if not ok:
            raise InvalidInput(f"{path} line {n}: not a JSON object")
    return lines
