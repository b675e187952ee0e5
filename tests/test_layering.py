"""The layering of docs/design.md §4, checked on the import graph (ast only, nothing is imported).

* no import cycle among the modules of ``components/`` and ``flows/``;
* the layers, top to bottom: application (``components.app``) -> flows -> stages -> library packages
  -> ``components.core``; an import only points down:
  * ``components.core`` imports nothing of the project outside core;
  * the library (``components/`` but the app and the stages) imports no stage, no flow and no app module;
  * ``flows/`` imports no stage (flows run stages through DVC, not by import) and no app module;
  * a stage imports no other stage (what two stages share lives in the library), no flow and no app;
* among the library packages: ``components.data`` imports only core, ``components.evaluation`` never
  ``components.reporting``;
* no two modules of ``components/`` and ``flows/`` share a file name (``__init__`` aside);
* a project import inside a function is allowed only where it defers a heavy optional dependency,
  and says so with a ``# deferred:`` comment on its line or the line above;
* every ``dvc.yaml`` stage lists, as deps, every project file its module imports (transitively),
  so a change to a library file re-runs exactly the stages that import it.

Each rule is also checked to fire on a tiny synthetic tree, so a broken walker cannot pass silently.
"""
from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from components.core.depgraph import build_graph, closure, duplicate_names, is_stage, missing_deps, violations

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ tests
def test_the_project_keeps_its_layers():
    g = build_graph(ROOT)
    assert len(g.files) > 40 and sum(map(len, g.edges.values())) > 100  # the walker sees the project
    bad = {k: v for k, v in violations(g).items() if v}
    assert not bad, "layering broken:\n" + "\n".join(f"{k}:\n  " + "\n  ".join(v) for k, v in bad.items())


def test_no_module_name_is_used_twice():
    """A stage keeps its DVC stage name; the library module behind it has another (``stages/flops.py``
    runs ``evaluation/cost.py``), so a file name alone says which module is meant."""
    g = build_graph(ROOT)
    assert not duplicate_names(g), f"module names used twice: {duplicate_names(g)}"


def test_the_packages_by_role_exist():
    g = build_graph(ROOT)
    for pkg in ("core", "data", "models", "store", "training", "evaluation", "reporting", "tracking", "ops",
                "tuning", "stages", "app"):
        assert f"components.{pkg}" in g.files, pkg
        doc = ast.get_docstring(ast.parse(g.files[f"components.{pkg}"].read_text()))
        assert doc and len(doc) > 60, f"components/{pkg}/__init__.py says what it owns and may import"
    flat = sorted(m for m in g.files if m.startswith("components.") and m.count(".") == 1 and not (ROOT / m.replace(".", "/")).is_dir())
    assert flat == [], f"modules directly under components/ (put them in the package of their role): {flat}"


def test_dvc_deps_cover_every_imported_project_file():
    g = build_graph(ROOT)
    miss = missing_deps(ROOT, g)
    assert not miss, ("dvc.yaml stages import project files they do not list as deps (a change to them would "
                      "not re-run the stage):\n" + "\n".join(f"{k}: {v}" for k, v in miss.items()))


def _tree(tmp_path: Path, files: dict[str, str], dvc: str | None = None) -> Path:
    for rel, src in files.items():
        f = tmp_path / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(textwrap.dedent(src))
    for pkg in ("components", "components/stages", "flows"):
        (tmp_path / pkg).mkdir(parents=True, exist_ok=True)
        (tmp_path / pkg / "__init__.py").touch()
    if dvc is not None:
        (tmp_path / "dvc.yaml").write_text(textwrap.dedent(dvc))
    return tmp_path


def test_each_rule_fires_on_a_tree_that_breaks_it(tmp_path):
    root = _tree(tmp_path, {
        "components/a.py": "from components import b\n",
        "components/b.py": "from components.c import x\n",
        "components/c.py": """\
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from components.stages import s1  # type hints only: not an edge
            def f():
                from components import a
            def g():
                # deferred: torch is heavy
                from components import d
            x = 1
            """,
        "components/d.py": "from components.stages.s1 import run\nfrom flows import f1\n",
        "components/e.py": "",
        "components/stages/s1.py": "from components import e\nfrom .s2 import y\n",
        "components/stages/s2.py": "y = 2\n",
        "components/app/cli.py": "from components.stages import s1\nfrom flows import f1\n",
        "components/reg.py": "import importlib\ndef load(n):\n    importlib.import_module(f'components.stages.{n}')\n",
        "flows/f1.py": "from components.stages import s2\n",
        # the layers between packages
        "components/core/k.py": "import components\nfrom components.core import k2\nfrom components.store import lib\n",
        "components/core/k2.py": "x = 1\n",
        "components/store/lib.py": "from components.core import k2\nfrom components.app import main\n",
        "components/app/main.py": "from components.stages import s2\nfrom components.core import k2\n",
        "flows/f2.py": "from components.app import main\n",
        "components/stages/s3.py": "from flows import f2\nfrom components.app import main\n",
        "components/data/dd.py": "from components.core import k2\nfrom components.store import lib\n",
        "components/evaluation/ev.py": "from components.reporting import fig\nfrom components.store import lib\n",
        "components/reporting/fig.py": "from components.evaluation import ev2\n",
        "components/evaluation/ev2.py": "y = 1\n",
    })
    g = build_graph(root)
    v = violations(g)
    assert v["cycle"] == ["components.a -> components.b -> components.c"]
    assert v["library imports a stage"] == ["components.d -> components.stages.s1", "components.reg -> components.stages",
                                            "components.reg -> components.stages.s1",
                                            "components.reg -> components.stages.s2",
                                            "components.reg -> components.stages.s3"]
    assert v["library imports a flow"] == ["components.d -> flows.f1"]
    assert v["flow imports a stage"] == ["flows.f1 -> components.stages.s2"]
    assert v["stage imports a stage"] == ["components.stages.s1 -> components.stages.s2"]
    # core -> a library package; the library -> the app; a flow -> the app; a stage -> a flow, the app
    assert v["core imports outside core"] == ["components.core.k -> components.store.lib"]  # the root and core are fine
    assert v["library imports the app"] == ["components.store.lib -> components.app.main"]
    assert v["flow imports the app"] == ["flows.f2 -> components.app.main"]
    assert v["stage imports a flow"] == ["components.stages.s3 -> flows.f2"]
    assert v["stage imports the app"] == ["components.stages.s3 -> components.app.main"]
    assert v["data imports the library above core"] == ["components.data.dd -> components.store.lib"]
    assert v["evaluation imports reporting"] == ["components.evaluation.ev -> components.reporting.fig"]
    # the app imports stages and flows freely (components/app/cli.py, components/app/main.py)
    assert not any(a.startswith("components.app") for k in v for a in v[k])
    assert v["undocumented import inside a function"] == ["components.c:5 -> components.a"]  # g() is documented
    assert "components.stages.s1" not in g.edges["components.c"]  # TYPE_CHECKING ignored
    assert closure(g, "components.stages.s2") == {"components.stages.s2"}
    # a registry loading its members by name imports all of them (and is a library -> stage import here)
    assert g.dynamic["components.reg"] == {"components.stages", "components.stages.s1", "components.stages.s2",
                                           "components.stages.s3"}
    assert g.edges["components.reg"] == set() and "components.stages.s2" in closure(g, "components.reg")
    assert closure(g, "components.b") == {"components.a", "components.b", "components.c", "components.d", "components.e",
                                          "components.stages.s1", "components.stages.s2", "flows.f1"}


def test_a_name_used_twice_is_found(tmp_path):
    root = _tree(tmp_path, {
        "components/stages/flops.py": "",
        "components/evaluation/flops.py": "",
        "components/evaluation/cost.py": "",
        "components/evaluation/__init__.py": "",
        "flows/cost.py": "",
    })
    assert duplicate_names(build_graph(root)) == {
        "cost": ["components.evaluation.cost", "flows.cost"],
        "flops": ["components.evaluation.flops", "components.stages.flops"]}


def test_missing_deps_are_named(tmp_path):
    root = _tree(tmp_path, {
        "components/lib.py": "from components import util\n",
        "components/util.py": "",
        "components/stages/s1.py": "from components import lib\n",
    }, dvc="""\
        stages:
          s1:
            cmd: python -m components.stages.s1
            deps: [components/stages/s1.py, components/lib.py]
          s2:
            foreach: [a, b]
            do:
              cmd: python -m components.stages.s1 --x ${item}
              deps: [components]
        """)
    assert missing_deps(root, build_graph(root)) == {"s1": ["components/util.py"]}


@pytest.mark.parametrize("module", ["components.stages.evaluate", "components.stages.train_sampler"])
def test_stage_closure_reaches_the_library_it_uses(module):
    g = build_graph(ROOT)
    assert "components.training.engine" in closure(g, "components.stages.train_sampler")
    assert all(not is_stage(m) or m == module for m in closure(g, module))
