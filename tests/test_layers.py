"""The layers hold on the real import graph: no module imports a higher layer, and no two
modules import each other, directly or round a loop. Imports inside functions count too: a
lazy import dodges a cycle at import time but is still a dependency.

Lowest first (docs/design.md, "Layers"):

0. contracts: tasks and their answers, accounts, the clock, the character vocabulary, metric
   functions, run records;
1. teachers;
2. defenses;
3. the world: actors, campaigns, users and how they write (`sim.surface`: a detector learns
   that from traffic, never from here), the gateway, the traffic loop;
4. students;
5. runs: `sim.runner` (and the incident replay) put a world, a teacher and a student together;
6. entry points: `experiments/`.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sim", "teachers", "defenses", "students", "experiments")

# module (or package prefix) -> layer; the longest matching prefix decides
LAYERS = {
    "sim.tasks": 0, "sim.answers": 0, "sim.grading": 0, "sim.accounts": 0, "sim.clock": 0, "sim.quiet": 0, "sim.records": 0,
    "sim.metrics": 0, "teachers.vocab": 0,
    "teachers": 1,
    "defenses": 2,
    "sim": 3,
    "students": 4,
    "sim.runner": 5, "sim.incident": 5,
    "experiments": 6,
}
# `import sim` sets the offline switches and offers `sim.run` (lazily, from sim.runner): the
# package itself is a facade at the runs layer, whatever its submodules' layers
PACKAGE_LAYER = {"sim": 5}


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            parts = f.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (at the top or inside a function). `from pkg
    import name` depends on the submodule `pkg.name` when there is one, else on `pkg`."""
    mods = modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        is_pkg = f.name == "__init__.py"
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                targets = [resolve(a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package, up `level - 1` more
                    pkg = m.split(".") if is_pkg else m.split(".")[:-1]
                    pkg = pkg[: len(pkg) - (node.level - 1)]
                    base = ".".join(pkg + ([base] if base else []))
                targets = [resolve(f"{base}.{a.name}") if f"{base}.{a.name}" in mods else resolve(base)
                           for a in node.names]
            else:
                continue
            graph[m] |= {t for t in targets if t and t != m}
    return graph


def layer(module: str) -> int:
    if module in PACKAGE_LAYER:
        return PACKAGE_LAYER[module]
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read_from_the_real_source():
    g = import_graph()
    assert len(g) > 40
    assert "sim.gateway" in g["sim.world"] and "defenses.base" in g["sim.gateway"]
    assert "sim.metrics" in g["sim.runner"]  # `from sim import metrics` is the submodule
    assert "students.base" in g["sim.runner"]  # an import inside a function counts


def test_no_module_imports_a_higher_layer():
    upward = sorted(f"{m} (layer {layer(m)}) imports {t} (layer {layer(t)})"
                    for m, targets in import_graph().items() for t in targets if layer(t) > layer(m))
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "\n".join(" <-> ".join(c) for c in found)


def test_the_checker_catches_an_upward_import_and_a_cycle():
    g = {"teachers.lm": {"defenses.base"}, "defenses.base": {"teachers.lm"}, "sim.tasks": set()}
    assert layer("teachers.lm") < layer("defenses.base")
    assert cycles(g) == [["defenses.base", "teachers.lm"]]
    assert layer("sim.tasks.kb") == 0 and layer("sim.runner") == 5 and layer("sim.gateway") == 3
