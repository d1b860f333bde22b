"""The study specs that ship inside the package (``adamlab/studies/specs/*.yaml``), found by name.

``adamlab sweep demo`` and ``load_spec("demo")`` read the bundled ``demo.yaml``; a path to a file works as before and
wins over a bundled name. ``adamlab init demo`` copies one out to edit.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import yaml

from ..atomic import write_text

SPECS_FOLDER = "specs"


def _specs_folder() -> Path:
    # The specs are package data; importlib.resources finds them in a source tree and in an installed wheel alike.
    return Path(str(resources.files("adamlab.studies") / SPECS_FOLDER))


def bundled_studies() -> dict[str, Path]:
    """Bundled study name -> its spec file, by name."""
    return {path.stem: path for path in sorted(_specs_folder().glob("*.yaml"))}


def study_description(path: Path) -> str:
    """The opening clause of a spec's ``description`` (up to its first colon or semicolon), for listings."""
    document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    text = " ".join(str(document.get("description", "")).split())
    return re.split(r"[:;]\s|\.\s", text, maxsplit=1)[0].rstrip(".")


def resolve_spec(spec: str | Path) -> Path:
    """A spec file: ``spec`` itself when it is a file, else the bundled study of that name (``demo`` or
    ``demo.yaml``). Raises ``FileNotFoundError`` naming the bundled studies otherwise."""
    path = Path(spec)
    if path.is_file():
        return path
    bundled = bundled_studies()
    name = path.stem if path.suffix in ("", ".yaml") and path.parent == Path(".") else None
    if name in bundled:
        return bundled[name]
    raise FileNotFoundError(f"no study spec at {spec}; bundled studies: {', '.join(bundled)}")


def copy_study(name: str, destination: str | Path | None = None) -> Path:
    """Copy bundled study ``name`` to ``destination`` (default ``./<name>.yaml``) to edit; never overwrites."""
    bundled = bundled_studies()
    if name not in bundled:
        raise ValueError(f"unknown bundled study {name!r}; bundled studies: {', '.join(bundled)}")
    target = Path(destination) if destination is not None else Path(f"{name}.yaml")
    if target.is_dir():
        target = target / f"{name}.yaml"
    if target.exists():
        raise ValueError(f"{target} already exists; pass another destination")
    write_text(target, bundled[name].read_text(encoding="utf-8"))  # atomic: never half a spec
    return target
