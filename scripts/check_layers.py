"""The package's layering, checked: import circles, imports that run upward, function-local
imports of editscope modules without a stated reason, and private names used across modules.

    python scripts/check_layers.py            # prints the counts and every finding; exit 1 on a circle

Imports are read with grimp (every import statement, function-local ones included; those under
``if TYPE_CHECKING:`` are left out: they never run). The layers are in :data:`LAYERS`, top first;
docs/architecture.md explains them. A module belongs to the layer of its longest listed prefix.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import grimp

PACKAGE = "editscope"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE

#: top first; a module may import its own layer and those below it
LAYERS: list[tuple[str, list[str]]] = [
    ("entry points", ["editscope", "editscope.cli", "editscope.cli_common", "editscope.cli_data"]),
    ("explorer", ["editscope.explorer"]),
    ("paper drafts", ["editscope.paper"]),
    ("analyses", ["editscope.analysis"]),
    ("reports", ["editscope.report"]),
    ("studies", ["editscope.runner", "editscope.mining", "editscope.data.needs"]),
    ("derived models", ["editscope.models.derive"]),
    ("edit methods", ["editscope.methods", "editscope.editors"]),
    ("evaluation", ["editscope.evaluation"]),
    ("metrics", ["editscope.metrics", "editscope.probe_versions"]),
    ("probes and answer rules", ["editscope.probes", "editscope.control_draws", "editscope.suites",
                                 "editscope.metrics.answers", "editscope.metrics.multihop"]),
    ("scoring", ["editscope.scoring", "editscope.interventions", "editscope.covariance"]),
    ("models", ["editscope.models", "editscope.hooks", "editscope.embeddings"]),
    ("data", ["editscope.data"]),
    ("foundations", ["editscope.errors", "editscope.paths", "editscope.progress", "editscope.registry",
                     "editscope.requests", "editscope.stats", "editscope.version", "editscope.checkpoints",
                     "editscope.moments", "editscope.peak_memory"]),
]

#: comment markers that state why an import is function-local
LOCAL_REASONS = ("optional dependency", "import cost")

#: modules whose commands import what they run, for one stated reason (measured on this 2-core
#: machine: ``import editscope.cli`` 2.8-3.1 s; with the reports, runner, analyses and paper
#: imported up front 3.9-4.1 s, so `editscope --help`, `methods`, `models` would wait a second more)
LAZY_MODULES: dict[str, str] = {
    "editscope.cli": "import cost: each command imports the layers it runs",
    "editscope.cli_data": "import cost: each command imports the layers it runs",
}


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.importer}:{self.line} -> {self.imported}  ({self.text})"


def layer_of(module: str) -> int:
    """Height of ``module``'s layer (0 = foundations); KeyError for a module no layer lists."""
    best, height = "", None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > len(best):
                best, height = p, len(LAYERS) - 1 - i
    if height is None:
        raise KeyError(f"{module} is in no layer of scripts/check_layers.py")
    return height


def graph() -> grimp.ImportGraph:
    return grimp.build_graph(PACKAGE, exclude_type_checking_imports=True)


def imports(g: grimp.ImportGraph) -> list[Import]:
    out = []
    for a in sorted(g.modules):
        for b in sorted(g.find_modules_directly_imported_by(a)):
            for d in g.get_import_details(importer=a, imported=b):
                out.append(Import(a, b, d["line_number"], d["line_contents"]))
    return out


def circles(g: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected groups of two or more modules (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found = []
    counter = 0
    for root in sorted(g.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(g.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(g.find_modules_directly_imported_by(w)))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def upward(all_imports: list[Import]) -> list[Import]:
    return [i for i in all_imports if layer_of(i.importer) < layer_of(i.imported)]


def _modules() -> dict[str, Path]:
    out = {}
    for f in SRC.rglob("*.py"):
        parts = f.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


def _target(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def unexplained_local_imports() -> list[str]:
    """Function-local imports of editscope modules whose line (or the line before) does not say
    why (:data:`LOCAL_REASONS`)."""
    out = []
    for module, path in sorted(_modules().items()):
        if module in LAZY_MODULES:
            continue
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines))
        top = {id(n) for n in tree.body}
        typing_only = {id(c) for n in ast.walk(tree) if isinstance(n, ast.If) and ast.unparse(n.test).endswith("TYPE_CHECKING")
                       for c in ast.walk(n)}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in top or id(node) in typing_only:
                continue
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [_target(module, path, node)]
            if not any(n == PACKAGE or n.startswith(PACKAGE + ".") for n in names):
                continue
            said = " ".join(lines[max(0, node.lineno - 2): node.end_lineno])
            if not any(r in said for r in LOCAL_REASONS):
                out.append(f"{module}:{node.lineno}  {lines[node.lineno - 1].strip()}")
    return out


def private_names_across_modules() -> list[str]:
    """``from editscope.x import _name`` and ``x._name`` where ``x`` is another editscope module."""
    mods = _modules()
    out = []
    for module, path in sorted(mods.items()):
        tree = ast.parse(path.read_text())
        aliases: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = _target(module, path, node)
                for a in node.names:
                    full = f"{target}.{a.name}"
                    if full in mods:
                        aliases[a.asname or a.name] = full
                    elif target in mods and target != module and a.name.startswith("_") and not a.name.startswith("__"):
                        out.append(f"{module}:{node.lineno}  from {target} import {a.name}")
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in mods and a.asname:
                        aliases[a.asname] = a.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__") and aliases[node.value.id] != module):
                out.append(f"{module}:{node.lineno}  {node.value.id}.{node.attr}")
    return out


def main() -> int:
    g = graph()
    every = imports(g)
    found = circles(g)
    up = upward(every)
    local = unexplained_local_imports()
    private = private_names_across_modules()
    print(f"{len(g.modules)} modules, {len(every)} import statements of editscope modules (grimp {grimp.__version__})")
    print(f"import circles: {len(found)}")
    for c in found:
        print("  " + " <-> ".join(c))
    print(f"upward imports: {len(up)}")
    for i in up:
        print(f"  {i}")
    print(f"function-local editscope imports without a stated reason: {len(local)}")
    for x in local:
        print(f"  {x}")
    print(f"private names used across modules: {len(private)}")
    for x in private:
        print(f"  {x}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
