"""adamlab's dependencies run one way: optim < stepsize < workloads < training < studies < reports < cli.

Every module is parsed with ``ast`` (imports inside functions included: a function-local import is still a
dependency), mapped to its layer, and every import of adamlab code from a higher layer, or between two packages of
one layer in both directions, fails with the file and line. docs/ARCHITECTURE.md describes the layers.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import adamlab

ROOT = Path(adamlab.__file__).parent

# The layers, lowest first. A module may import its own layer and the layers below it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # the lowest layer: optimizers, schedules, optional packages, atomic files, console output
    ("optim", ("optim", "schedules", "extras", "atomic", "console")),
    ("stepsize", ("stepsize",)),  # step-size estimators: any loss on any parameters
    ("workloads", ("metrics", "tasks", "models", "encoding", "evaluation")),  # what a trial trains and scores
    ("training", ("training",)),  # one run: config, lr resolution, the loop, run files
    ("studies", ("studies", "integrations")),  # many runs: specs, trials, executors, the store
    ("reports", ("reports",)),  # what a study's store says
    ("cli", ("cli", "__main__", "__init__")),  # the commands
]
RANK = {package: rank for rank, (_, packages) in enumerate(LAYERS) for package in packages}


def package_of(module: str) -> str:
    """``adamlab.optim.registry`` -> ``optim``; ``adamlab`` itself -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    relative = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(relative.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, name: str | None = None) -> list[tuple[int, str]]:
    """(line, adamlab module) for every import in the file, at any depth; relative imports resolved against
    ``name``, the file's module (by default, from its place in the package)."""
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "adamlab"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "adamlab":
                found.append((node.lineno, target))
    return found


def modules() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def test_every_package_has_a_layer():
    unplaced = sorted({package_of(module_name(path)) for path in modules()} - set(RANK))
    assert not unplaced, f"place {unplaced} in LAYERS here and in docs/ARCHITECTURE.md"


def layer_violations(path: Path, name: str | None = None) -> list[str]:
    source = package_of(name or module_name(path))
    violations = []
    for line, target in imported_modules(path, name):
        imported = package_of(target)
        if imported in RANK and source in RANK and RANK[imported] > RANK[source]:
            violations.append(f"{path}:{line}: {source} ({LAYERS[RANK[source]][0]} layer) imports {target} "
                              f"({LAYERS[RANK[imported]][0]} layer)")
    return violations


def test_imports_run_down_the_layers_only():
    violations = [v for path in modules() for v in layer_violations(path)]
    assert not violations, "imports against the layer order:\n" + "\n".join(violations)


def test_no_import_cycle_between_packages():
    edges: dict[str, dict[str, str]] = defaultdict(dict)  # package -> imported package -> where
    for path in modules():
        source = package_of(module_name(path))
        for line, target in imported_modules(path):
            imported = package_of(target)
            if imported != source:
                edges[source].setdefault(imported, f"{path.relative_to(ROOT.parent)}:{line}")

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, trail = stack.pop()
            for nxt in edges.get(node, {}):
                if nxt == start:
                    return trail + [start]
                if nxt not in trail:
                    stack.append((nxt, trail + [nxt]))
        return None

    for package in sorted(edges):
        cycle = cycle_from(package)
        assert cycle is None, "import cycle: " + " -> ".join(
            f"{a} ({edges[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


def test_the_checker_sees_function_local_and_relative_imports(tmp_path):
    """The checker must catch what it exists to catch: an upward import inside a function, written relatively."""
    probe = tmp_path / "probe.py"
    probe.write_text("import torch\n\n\ndef f():\n    from ..training import train\n    return train\n")
    assert imported_modules(probe, "adamlab.optim.probe") == [(5, "adamlab.training")]
    assert layer_violations(probe, "adamlab.optim.probe") == [
        f"{probe}:5: optim (optim layer) imports adamlab.training (training layer)"]
    assert layer_violations(probe, "adamlab.studies.probe") == []
