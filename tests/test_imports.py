"""The package has no import circles (read from the source with ast, so imports inside functions
count too), nothing below the command line imports it, and the floors keep their order:

    command line      cli, __main__, commands/
    assembly          api, methods, slab_driver, tasks, training_sets, io/, published/ ...
    computation       samplers/, solvers/, physics/, prior/ (no io, no command line; prior
                      names no architecture family's package: families register with it)
    bottom floor      distributed/ (slabs, ordered reductions, launch): errors and device only
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "medrecon"


def _modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package under ``root``."""
    out = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _targets(module: str, path: Path, node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    """The package modules an import statement runs: the named module (``from P import name``
    names P.name when that is a module) and the packages above it, except the importer's own
    ancestors (those are always already being imported)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
            package = package[:len(package) - (node.level - 1)]
            base = ".".join(package + ([base] if base else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    own = {".".join(module.split(".")[:k]) for k in range(1, module.count(".") + 2)}
    out = set()
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        parts = name.split(".") if name else []
        for k in range(1, len(parts) + 1):
            target = ".".join(parts[:k])
            if target in known and target not in own:
                out.add(target)
    return out


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its source."""
    modules = _modules(root)
    known = set(modules)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[module] |= _targets(module, path, node, known) - {module}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles() -> None:
    assert circles(import_graph()) == []


def test_nothing_below_the_command_line_imports_it() -> None:
    graph = import_graph()
    top = ("medrecon.cli", "medrecon.commands", "medrecon.__main__")
    offenders = sorted(m for m, deps in graph.items() if not m.startswith(top)
                       and any(d.startswith(top) for d in deps))
    assert offenders == []


COMPUTATION = ("medrecon.samplers", "medrecon.solvers", "medrecon.physics", "medrecon.prior",
               "medrecon.distributed")
IO_AND_COMMANDS = ("medrecon.io", "medrecon.commands", "medrecon.cli", "medrecon.__main__")
BOTTOM = "medrecon.distributed"
BOTTOM_MAY_USE = {"medrecon", "medrecon.errors", "medrecon.device"}


def _within(name: str, packages: tuple[str, ...] | str) -> bool:
    packages = (packages,) if isinstance(packages, str) else packages
    return any(name == p or name.startswith(p + ".") for p in packages)


def layering_offences(graph: dict[str, set[str]]) -> list[str]:
    """``"importer -> imported"`` for every import that breaks the floors (module docstring)."""
    out = []
    for module, deps in graph.items():
        for dep in deps:
            if _within(module, COMPUTATION) and _within(dep, IO_AND_COMMANDS):
                out.append(f"{module} -> {dep}")
            elif _within(module, "medrecon.prior") and _within(dep, "medrecon.published"):
                out.append(f"{module} -> {dep}")
            elif _within(module, BOTTOM) and not _within(dep, BOTTOM) and dep not in BOTTOM_MAY_USE:
                out.append(f"{module} -> {dep}")
    return sorted(out)


def test_the_floors_keep_their_order() -> None:
    assert layering_offences(import_graph()) == []


def test_the_floor_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    """Each rule, broken once in a copy of the package (imports inside functions count)."""
    import shutil

    copy = tmp_path / "medrecon"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "weights"))
    broken = {"samplers/loop.py": "def f():\n    from medrecon.io.outputs import hold_lock\n",
              "solvers/cg.py": "import medrecon.cli\n",
              "prior/checkpoint.py": "def g():\n    from medrecon.published import build_denoiser\n",
              "distributed/reduce.py": "from medrecon.methods import run_method\n",
              "physics/operator.py": "from medrecon.commands import reconstruct\n"}
    for name, line in broken.items():
        path = copy / name
        path.write_text(path.read_text(encoding="utf-8") + "\n" + line, encoding="utf-8")
    assert layering_offences(import_graph(copy)) == [
        "medrecon.distributed.reduce -> medrecon.methods",
        "medrecon.physics.operator -> medrecon.commands",
        "medrecon.physics.operator -> medrecon.commands.reconstruct",
        "medrecon.prior.checkpoint -> medrecon.published",
        "medrecon.samplers.loop -> medrecon.io",
        "medrecon.samplers.loop -> medrecon.io.outputs",
        "medrecon.solvers.cg -> medrecon.cli"]


def test_the_circle_finder_sees_imports_inside_functions(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub.b import f\n")
    (pkg / "a.py").write_text("def g():\n    from pkg.sub.b import f\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import g\n")
    (pkg / "c.py").write_text("import pkg.sub\n")
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.sub", "pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.a"}
    assert circles(graph) == [["pkg.a", "pkg.sub", "pkg.sub.b"]]
    (pkg / "sub" / "b.py").write_text("def f():\n    pass\n")
    assert circles(import_graph(pkg)) == []
