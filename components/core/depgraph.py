"""The project's import graph, read with ``ast`` (nothing is imported), and what it implies for DVC.

* :func:`build_graph` - modules of ``components/`` and ``flows/`` and the project modules each
  imports (``TYPE_CHECKING`` blocks excluded), plus every project import made inside a function;
* :func:`violations` - the layering rules of docs/design.md §4: the layers application
  (``components.app``) -> flows -> stages (``components.stages``) -> library packages -> ``components.core``,
  an import only pointing down (core imports nothing of the project outside core; the library imports
  no stage, flow or app module; flows import no stage and no app; a stage imports no stage, flow or
  app); among the library packages ``data`` imports only core and ``evaluation`` never ``reporting``;
  no cycle; an import inside a function only with a ``# deferred:`` comment. Checked by
  ``tests/test_layering.py``, which also checks that no two modules share a file name
  (:func:`duplicate_names`);
* :func:`missing_deps` / :func:`code_deps` - the project files each ``dvc.yaml`` stage imports
  (transitively), which its ``deps`` must list so that a change re-runs exactly the stages that
  import the changed file. ``python -m components.core.depgraph --write`` rewrites the ``components/``
  deps of every stage of ``dvc.yaml`` from the graph (data deps are kept as they are).
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

PROJECT = ("components", "flows")


@dataclass
class Graph:
    files: dict[str, Path]  # module -> file
    edges: dict[str, set[str]] = field(default_factory=dict)  # module -> project modules it imports
    inner: list[tuple[str, int, str, bool]] = field(default_factory=list)  # (module, line, target, commented)
    #: module -> modules it loads by name at call time (a registry importing its members): not an
    #: import-time edge, so never a cycle, but a dependency all the same
    dynamic: dict[str, set[str]] = field(default_factory=dict)

    def uses(self, module: str) -> set[str]:
        """Static and dynamic imports of ``module``."""
        return self.edges.get(module, set()) | self.dynamic.get(module, set())


def _modules(root: Path) -> dict[str, Path]:
    out = {}
    for base in PROJECT:
        for f in sorted((root / base).rglob("*.py")):
            parts = list(f.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = f
    return out


def _resolve(name: str, files: dict[str, Path]) -> str | None:
    while name and name not in files:
        name = name.rpartition(".")[0]
    return name or None


def _targets(node: ast.AST, module: str, is_pkg: bool, files: dict[str, Path]) -> set[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative import
            pkg = module.split(".") if is_pkg else module.split(".")[:-1]
            pkg = pkg[:len(pkg) - node.level + 1]
            base = ".".join(pkg + ([base] if base else []))
        # ``from pkg import sub`` imports the submodule; ``from mod import name`` the module
        names = [f"{base}.{a.name}" for a in node.names] or [base]
    out = {_resolve(n, files) for n in names if n.split(".")[0] in PROJECT}
    return {t for t in out if t and t != module}


def _dynamic_prefix(call: ast.Call) -> str | None:
    """``"components.x."`` for ``importlib.import_module("components.x." ...)`` (a constant or the leading
    text of an f-string), else None."""
    fn = call.func
    name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
    if name != "import_module" or not call.args:
        return None
    arg = call.args[0]
    head = arg.value if isinstance(arg, ast.Constant) else (
        arg.values[0].value if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant)
        else None)
    if not isinstance(head, str) or head.split(".")[0] not in PROJECT:
        return None
    return head if head.endswith(".") else head + "."


def _type_checking(test: ast.expr) -> bool:
    return "TYPE_CHECKING" in ast.unparse(test)


def build_graph(root: Path) -> Graph:
    files = _modules(root)
    g = Graph(files, {m: set() for m in files}, dynamic={m: set() for m in files})
    for module, f in files.items():
        src = f.read_text()
        lines = src.splitlines()
        tree = ast.parse(src, filename=str(f))

        def visit(node: ast.AST, in_function: bool) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and _type_checking(child.test):
                    for sub in child.orelse:  # the TYPE_CHECKING body is never executed
                        visit(sub, in_function)
                    continue
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    tgts = _targets(child, module, f.name == "__init__.py", files)
                    g.edges[module] |= tgts
                    if in_function and tgts:
                        here = lines[child.lineno - 1]
                        above = lines[child.lineno - 2] if child.lineno > 1 else ""
                        commented = "# deferred:" in here or above.strip().startswith("# deferred:")
                        g.inner.extend((module, child.lineno, t, commented) for t in sorted(tgts))
                elif isinstance(child, ast.Call) and (prefix := _dynamic_prefix(child)):
                    # importlib.import_module(f"components.models.samplers.{mod}"): a registry loading its
                    # members; counted as importing every module under the prefix
                    g.dynamic[module] |= {m for m in files if m != module and (m + ".").startswith(prefix)}
                visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

        visit(tree, False)
    return g


def cycles(g: Graph) -> list[list[str]]:
    """Strongly connected components of the import-time edges with more than one module (Tarjan,
    iterative); a registry loading its members at call time is not a cycle."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for start in g.edges:
        if start in index:
            continue
        work = [(start, iter(sorted(g.edges[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(g.edges.get(w, ())))))
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
                    out.append(sorted(comp))
    return out


def _under(m: str, pkg: str) -> bool:
    return m == pkg or m.startswith(pkg + ".")


def is_stage(m: str) -> bool:
    return _under(m, "components.stages")


def is_app(m: str) -> bool:
    """The application (``components/app/``): the CLI and the commands behind it, the top layer."""
    return _under(m, "components.app")


def is_flow(m: str) -> bool:
    return _under(m, "flows")


def is_core(m: str) -> bool:
    """``components/core/`` and the package root (``components/__init__.py``, which only sets the
    environment and is run before any of its modules anyway)."""
    return m == "components" or _under(m, "components.core")


def is_library(m: str) -> bool:
    """Every package of ``components/`` below the stages (core included); not the app, not a stage."""
    return _under(m, "components") and not is_stage(m) and not is_app(m)


def violations(g: Graph) -> dict[str, list[str]]:
    """The layers, top to bottom: application (``components.app``) -> flows -> stages
    (``components.stages``) -> library packages -> ``components.core``; an import only points down."""
    pairs = [(a, b) for a in g.edges for b in sorted(g.uses(a))]

    def rule(src, dst, skip=lambda a, b: False):
        return [f"{a} -> {b}" for a, b in pairs if src(a) and dst(b) and not skip(a, b)]

    return {
        "cycle": [" -> ".join(c) for c in cycles(g)],
        "core imports outside core": rule(is_core, lambda b: not is_core(b)),
        "library imports a stage": rule(is_library, is_stage),
        "library imports a flow": rule(is_library, is_flow),
        "library imports the app": rule(is_library, is_app),
        "flow imports a stage": rule(is_flow, is_stage),
        "flow imports the app": rule(is_flow, is_app),
        "stage imports a stage": rule(is_stage, is_stage, lambda a, b: a == "components.stages"),
        "stage imports a flow": rule(is_stage, is_flow),
        "stage imports the app": rule(is_stage, is_app),
        "data imports the library above core": rule(lambda a: _under(a, "components.data"),
                                                     lambda b: not is_core(b) and not _under(b, "components.data")),
        "evaluation imports reporting": rule(lambda a: _under(a, "components.evaluation"),
                                             lambda b: _under(b, "components.reporting")),
        "undocumented import inside a function": [f"{m}:{line} -> {t}" for m, line, t, ok in g.inner if not ok],
    }


def duplicate_names(g: Graph) -> dict[str, list[str]]:
    """File names (``__init__`` aside) used by more than one module of ``components/`` and ``flows/``:
    name -> the modules."""
    by: dict[str, list[str]] = {}
    for m, f in g.files.items():
        if f.stem != "__init__":
            by.setdefault(f.stem, []).append(m)
    return {k: sorted(v) for k, v in sorted(by.items()) if len(v) > 1}


def closure(g: Graph, module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(g.uses(m))
    return seen


def _stage_specs(dvc_yaml: Path) -> dict[str, dict]:
    """stage name -> its spec (a foreach stage's ``do`` body)."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    return {name: (spec.get("do") or spec) for name, spec in stages.items()}


def missing_deps(root: Path, g: Graph) -> dict[str, list[str]]:
    """Per dvc.yaml stage: project files its command's module imports (transitively) that no dep covers.
    Package ``__init__`` files that only set the environment (``components/__init__.py``) count too."""
    out = {}
    for name, spec in _stage_specs(root / "dvc.yaml").items():
        m = re.search(r"python -m ([\w.]+)", spec["cmd"])
        if not m or m.group(1) not in g.files:
            continue
        deps = [str(d) for d in spec.get("deps", [])]
        need = sorted(str(g.files[x].relative_to(root)) for x in closure(g, m.group(1)))
        miss = [f for f in need if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)]
        if miss:
            out[name] = miss
    return out




def stage_module(spec: dict, g: Graph) -> str | None:
    """The project module a dvc.yaml stage's ``cmd`` runs (``python -m <module>``), if any."""
    m = re.search(r"python -m ([\w.]+)", str(spec.get("cmd", "")))
    return m.group(1) if m and m.group(1) in g.files else None


def code_deps(root: Path, g: Graph, module: str) -> list[str]:
    """The project files ``module`` imports (itself included, transitively), as dvc.yaml deps: a package
    folder whose every ``.py`` file is needed is listed once as the folder; sorted."""
    need = {g.files[m].relative_to(root).as_posix() for m in closure(g, module)}
    out = set(need)
    folders = sorted({str(Path(f).parent.as_posix()) for f in need}, key=lambda d: d.count("/"), reverse=True)
    for d in folders:
        if d in PROJECT:  # never collapse the top of the tree
            continue
        files = {f.relative_to(root).as_posix() for f in (root / d).rglob("*.py")}
        if files and files <= need:
            out -= files
            out = {x for x in out if not x.startswith(d + "/")}
            out.add(d)
    return sorted(out)


def rewrite_dvc_deps(root: Path, g: Graph, dvc_yaml: Path) -> str:
    """``dvc.yaml``'s text with every stage's ``components/`` / ``flows/`` deps replaced by
    :func:`code_deps` of its module; data deps, comments and everything else are kept."""
    specs = _stage_specs(dvc_yaml)
    lines = dvc_yaml.read_text().splitlines()
    out: list[str] = []
    stage = None
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^  (\w+):\s*$", line)
        if m:
            stage = m.group(1)
        if re.match(r"^\s+deps:\s*$", line) and stage in specs and stage_module(specs[stage], g):
            out.append(line)
            indent = None
            i += 1
            kept = []
            while i < len(lines) and re.match(r"^\s+- ", lines[i]):
                indent = indent or lines[i][:len(lines[i]) - len(lines[i].lstrip())]
                item = lines[i].strip()[2:].strip()
                if not item.startswith(PROJECT):
                    kept.append(lines[i])
                i += 1
            out += kept + [f"{indent}- {d}" for d in code_deps(root, g, stage_module(specs[stage], g))]
            continue
        out.append(line)
        i += 1
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m components.core.depgraph",
                                 description="check the layering; with --write, rewrite dvc.yaml's code deps")
    ap.add_argument("--root", default=".")
    ap.add_argument("--write", action="store_true", help="rewrite the components/ deps of every dvc.yaml stage")
    args = ap.parse_args(argv)
    root = Path(args.root).resolve()
    g = build_graph(root)
    if args.write:
        (root / "dvc.yaml").write_text(rewrite_dvc_deps(root, g, root / "dvc.yaml"))
    bad = {k: v for k, v in violations(g).items() if v}
    dup = duplicate_names(g)
    if dup:
        bad["a module name used twice"] = [f"{k}: {', '.join(v)}" for k, v in dup.items()]
    miss = missing_deps(root, g)
    for k, v in bad.items():
        print(f"{k}:\n  " + "\n  ".join(v))
    for k, v in miss.items():
        print(f"dvc.yaml stage {k} does not list {v}")
    return 1 if bad or miss else 0


if __name__ == "__main__":
    sys.exit(main())
