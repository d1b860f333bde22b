"""Files that are either whole or absent: a kill, a full disk or a power cut never leaves half a file behind.

* ``write_text`` / ``write_json`` write a temporary file next to the target, flush it to disk, then rename it over
  the target (a rename within a folder is atomic on POSIX and Windows), and flush the folder so the rename itself
  survives a power cut. Readers see the old content or the new one, never a mix.
* ``append_jsonl`` adds one record per line. An append can still be cut short by a kill; ``read_jsonl`` therefore
  drops an unterminated last line that does not parse (a torn write), and names the file and line of any other bad
  line, so a damaged log is never read silently. A writer that resumes rewrites the file (``rewrite_jsonl``) before
  appending, so a torn fragment never gets glued to the next record.
* JSON is strict: ``NaN`` and ``Infinity`` are not JSON and most parsers reject them. ``finite_record`` turns them
  into ``null`` and lists the affected keys under ``"nonfinite"`` so the information is not lost.

The standard library has the pieces (``os.replace``, ``os.fsync``) but no helper that combines them, and the
well-known packages for it (``atomicwrites``) are unmaintained; so it is written here, once, for every writer.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

NONFINITE_KEY = "nonfinite"


class CorruptFileError(ValueError):
    """A file that exists but cannot be read as what it should be; the message names the file (and line)."""


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows cannot open folders; its rename is durable enough
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems (network mounts) refuse fsync on folders; the data itself is synced
        pass
    finally:
        os.close(fd)


def check_writable_folder(folder: str | Path) -> None:
    """Raise ``ValueError`` (one line naming the path) unless ``folder`` is, or could be created as, a folder this
    process can write into. Only a temporary file is created and removed: ``os.access`` would say yes to root on a
    read-only mount."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{folder} is a file, not a folder" if existing == folder else
                         f"{folder} cannot be created: {existing} is a file")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise ValueError(f"cannot write into {existing}: {error.strerror}") from None


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Replace ``path`` with ``data`` atomically and durably."""
    path = Path(path)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    return path


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def finite_record(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with every non-finite float (at any depth) replaced by ``None``; their places are listed under
    ``"nonfinite"`` (dotted keys, with the value as a string: ``"inf"``, ``"-inf"``, ``"nan"``), so a reader can
    tell a diverged loss from a missing one. A record without any is returned as it is."""
    nonfinite: dict[str, str] = {}

    def clean(value: Any, where: str) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            nonfinite[where] = str(value)
            return None
        if isinstance(value, dict):
            return {k: clean(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v, f"{where}.{i}") for i, v in enumerate(value)]
        return value

    cleaned = clean(record, "")
    return cleaned | {NONFINITE_KEY: nonfinite} if nonfinite else record


def dumps(value: Any, **kwargs) -> str:
    """Strict JSON: raises ``ValueError`` on NaN or infinity instead of writing something parsers reject."""
    return json.dumps(value, allow_nan=False, **kwargs)


def write_json(path: str | Path, value: Any, **kwargs) -> Path:
    return write_text(path, dumps(value, **kwargs))


def read_json(path: str | Path) -> Any:
    """The JSON content of ``path``; a damaged file raises ``CorruptFileError`` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise CorruptFileError(f"{path} is not UTF-8 text (byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise CorruptFileError(f"{path} is damaged: {error.msg} at line {error.lineno} column {error.colno}") from None


def append_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Append one JSON line per record, in one write. Not fsynced: a record lost to a power cut is redone from the
    last checkpoint, which is what a resume rewrites the log to anyway."""
    lines = "".join(dumps(record) + "\n" for record in records)
    with open(path, "a", encoding="utf-8") as f:
        f.write(lines)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file. A torn last line (no newline, or not JSON) is dropped: it is what a kill
    in the middle of an append leaves. Any other bad line raises ``CorruptFileError`` naming file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise CorruptFileError(f"{path}:{line}: not UTF-8 text") from None
    lines = text.split("\n")
    complete, last = lines[:-1], lines[-1]  # ``last`` is "" when the file ends with a newline
    records = []
    for number, line in enumerate(complete, start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise CorruptFileError(f"{path}:{number}: not a JSON record ({error.msg})") from None
    if last.strip():
        try:  # a record whose newline alone was lost is whole: keep it
            records.append(json.loads(last))
        except json.JSONDecodeError:
            pass  # torn by a kill mid-append: dropped
    return records


def rewrite_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    """Replace a JSON-lines file atomically (used on resume, to keep only the records a checkpoint covers)."""
    return write_text(path, "".join(dumps(record) + "\n" for record in records))
