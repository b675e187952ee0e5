"""The layering of docs/design.md §4, checked on the import graph (ast only, nothing is imported).

* no import cycle among the modules of ``components/`` and ``flows/``;
* the library (``components/`` but the CLI and the stages) imports no stage and no flow;
* ``flows/`` imports no stage (flows run stages through DVC, not by import);
* a stage imports no other stage (what two stages share lives in the library);
* a project import inside a function is allowed only where it defers a heavy optional dependency,
  and says so with a ``# deferred:`` comment on its line or the line above;
* every ``dvc.yaml`` stage lists, as deps, every project file its module imports (transitively),
  so a change to a library file re-runs exactly the stages that import it.

Each rule is also checked to fire on a tiny synthetic tree, so a broken walker cannot pass silently.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from components.core.depgraph import build_graph, closure, is_stage, missing_deps, violations

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ tests
def test_the_project_keeps_its_layers():
    g = build_graph(ROOT)
    assert len(g.files) > 40 and sum(map(len, g.edges.values())) > 100  # the walker sees the project
    bad = {k: v for k, v in violations(g).items() if v}
    assert not bad, "layering broken:\n" + "\n".join(f"{k}:\n  " + "\n  ".join(v) for k, v in bad.items())


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
    })
    g = build_graph(root)
    v = violations(g)
    assert v["cycle"] == ["components.a -> components.b -> components.c"]
    assert v["library imports a stage"] == ["components.d -> components.stages.s1", "components.reg -> components.stages",
                                            "components.reg -> components.stages.s1",
                                            "components.reg -> components.stages.s2"]
    assert v["library imports a flow"] == ["components.d -> flows.f1"]
    assert v["flow imports a stage"] == ["flows.f1 -> components.stages.s2"]
    assert v["stage imports a stage"] == ["components.stages.s1 -> components.stages.s2"]
    assert v["undocumented import inside a function"] == ["components.c:5 -> components.a"]  # g() is documented
    assert "components.stages.s1" not in g.edges["components.c"]  # TYPE_CHECKING ignored
    assert closure(g, "components.stages.s2") == {"components.stages.s2"}
    # a registry loading its members by name imports all of them (and is a library -> stage import here)
    assert g.dynamic["components.reg"] == {"components.stages", "components.stages.s1", "components.stages.s2"}
    assert g.edges["components.reg"] == set() and "components.stages.s2" in closure(g, "components.reg")
    assert closure(g, "components.b") == {"components.a", "components.b", "components.c", "components.d", "components.e",
                                          "components.stages.s1", "components.stages.s2", "flows.f1"}


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
