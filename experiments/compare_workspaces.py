"""Are two finished workspaces' outputs the same, but for stored code fingerprints?

    python experiments/compare_workspaces.py OLD NEW

For a change that must not move results (a refactor, a package move): run `make demo` in a fresh clone
before and after (`salient bench loop demo --keep` keeps them) and compare. Prints every DVC output of
``dvc.lock`` whose hash differs, then, inside the differing folders, every file that differs in more
than a code fingerprint:

* a checkpoint (``.pt``): loaded by ``load_checkpoint`` (old module paths mapped) and compared
  key by key, weights by their SHA-256 (``state_digest``), ignoring ``fingerprint`` and, in
  ``kwargs``, the SHA-256 of encoder files (``*_digest``: those files carry a fingerprint themselves);
* a feature store's ``meta.json``: every key but ``fingerprint`` (its per-file digests included);
* anything else: bytes.
"""
import sys
from pathlib import Path

import yaml

from components.core.integrity import load_checkpoint

old, new = (Path(a) for a in sys.argv[1:3])


def outs(ws: Path) -> dict[str, str]:
    stages = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    return {o["path"]: o.get("md5") or o.get("hash") for st in stages.values() for o in st.get("outs", [])}


def norm(ck: dict) -> str:
    kw = {k: v for k, v in (ck.get("kwargs") or {}).items() if not k.endswith("_digest")}
    return repr({**{k: v for k, v in ck.items() if k not in ("fingerprint", "state_dict", "kwargs")}, "kwargs": kw})


def same_file(a: Path, b: Path) -> bool:
    x, y = a.read_bytes(), b.read_bytes()
    if x == y:
        return True
    if a.suffix == ".pt":
        ca, cb = (load_checkpoint(f) for f in (a, b))  # weights checked against their digests too
        return norm(ca) == norm(cb)
    if a.name == "meta.json":
        ma, mb = (yaml.safe_load(t) for t in (x, y))
        return {k: v for k, v in ma.items() if k != "fingerprint"} == {k: v for k, v in mb.items() if k != "fingerprint"}
    return False


oa, ob = outs(old), outs(new)
moved = sorted(p for p in set(oa) | set(ob) if oa.get(p) != ob.get(p))
print(f"{len(set(oa) | set(ob)) - len(moved)} outputs byte-identical, {len(moved)} differ")
bad = 0
for p in moved:
    if (old / p).is_file():
        print(f"  {p}: differs" + (" (a timing)" if "/timings/" in p else ""))
        bad += "/timings/" not in p
        continue
    files = sorted({f.relative_to(old / p) for f in (old / p).rglob("*") if f.is_file()}
                   | {f.relative_to(new / p) for f in (new / p).rglob("*") if f.is_file()})
    diff = [f for f in files if not ((old / p / f).is_file() and (new / p / f).is_file() and same_file(old / p / f, new / p / f))]
    print(f"  {p}/: {len(files) - len(diff)} of {len(files)} files the same but for code fingerprints"
          + "".join(f"\n    DIFFERS {f}" for f in diff))
    bad += len(diff)
print("same results" if not bad else f"{bad} outputs differ in more than a fingerprint or a timing")
sys.exit(1 if bad else 0)
