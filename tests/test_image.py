"""The worker image (Dockerfile, .dockerignore) and the work-pool templates that start it, checked
statically: no Docker daemon is needed. A small parser reads the Dockerfile's instructions (line
continuations, comments, ARG / ENV / WORKDIR / COPY / RUN / USER); a small matcher applies
.dockerignore as Docker does (root-anchored, ``**``, last match wins, ``!`` re-includes); Prefect's
own server-side checks validate the templates (placeholders declared, defaults valid for the schema).
"""
from __future__ import annotations

import json
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = {"docker": ROOT / "deploy" / "docker-pool.json", "kubernetes": ROOT / "deploy" / "k8s-pool.json"}
CUDA_INDEX = "https://download.pytorch.org/whl/cu128"


# ----------------------------------------------------------------------------- Dockerfile parser
@dataclass
class Instruction:
    cmd: str  # upper case: FROM, ARG, ENV, ...
    args: str  # the rest, continuations joined
    line: int


@dataclass
class Image:
    """The final stage as the instructions leave it (variables expanded with the given build args)."""
    args: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: str = "root"
    base: str = ""
    dirs: set[str] = field(default_factory=set)  # created by WORKDIR, RUN mkdir, useradd --create-home
    copies: list[tuple[str, list[str], str, dict]] = field(default_factory=list)  # (workdir, sources, dest, flags)
    runs: list[tuple[str, str, str]] = field(default_factory=list)  # (workdir, user, shell text)
    owner: dict[str, str] = field(default_factory=dict)  # path -> owner set by chown / COPY --chown


def parse_dockerfile(text: str) -> list[Instruction]:
    out, buf, start = [], "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue  # blank lines, comments and parser directives
        if buf and line.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        cmd, _, rest = buf.partition(" ")
        out.append(Instruction(cmd.upper(), rest.strip(), start))
        buf = ""
    assert not buf, "the Dockerfile ends inside a continued line"
    return out


def _expand(s: str, vars_: dict[str, str]) -> str:
    def sub(m):
        name = m.group(1) or m.group(2)
        return vars_.get(name, m.group(0))
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, s)


def _pairs(args: str) -> dict[str, str]:
    """``ENV`` / ``ARG`` / ``LABEL`` key=value pairs (shell-quoted values)."""
    return dict(tok.split("=", 1) if "=" in tok else (tok, "") for tok in shlex.split(args))


def _resolve(workdir: str, path: str) -> str:
    return str(PurePosixPath(workdir) / path) if not path.startswith("/") else str(PurePosixPath(path))


def final_stage(instructions: list[Instruction], build_args: dict[str, str] | None = None) -> Image:
    build_args = build_args or {}
    global_args: dict[str, str] = {}
    img = None
    for ins in instructions:
        if ins.cmd == "ARG" and img is None:  # before the first FROM: usable in FROM lines
            for k, v in _pairs(ins.args).items():
                global_args[k] = build_args.get(k, v)
            continue
        if ins.cmd == "FROM":
            words = ins.args.split()
            img = Image(base=_expand(words[0], global_args))
            continue
        assert img is not None, f"line {ins.line}: {ins.cmd} before FROM"
        vars_ = {**img.args, **img.env}
        if ins.cmd == "ARG":
            for k, v in _pairs(ins.args).items():
                img.args[k] = build_args.get(k, _expand(v, vars_))
        elif ins.cmd == "ENV":
            for k, v in _pairs(ins.args).items():
                img.env[k] = _expand(v, vars_)
        elif ins.cmd == "WORKDIR":
            img.workdir = _resolve(img.workdir, _expand(ins.args, vars_))
            img.dirs.add(img.workdir)
        elif ins.cmd == "USER":
            img.user = _expand(ins.args, vars_).split(":")[0]
        elif ins.cmd == "COPY":
            words = shlex.split(ins.args)
            flags = dict(w[2:].split("=", 1) for w in words if w.startswith("--"))
            paths = [w for w in words if not w.startswith("--")]
            dest = _resolve(img.workdir, _expand(paths[-1], vars_))
            img.copies.append((img.workdir, paths[:-1], dest, flags))
            img.dirs.add(dest if paths[-1].endswith("/") or paths[-1] in (".", "./") else str(PurePosixPath(dest).parent))
            if "chown" in flags:
                img.owner[dest] = flags["chown"].split(":")[0]
        elif ins.cmd == "RUN":
            text = _expand(ins.args, vars_)
            img.runs.append((img.workdir, img.user, text))
            for m in re.finditer(r"mkdir\s+(?:-p\s+)?((?:[^\s;&|]+\s*)+)", text):
                img.dirs.update(_resolve(img.workdir, p) for p in m.group(1).split() if not p.startswith("-"))
            for m in re.finditer(r"useradd\b[^;&|]*?--create-home[^;&|]*?\s(\w+)\s*(?:&&|;|$)", text):
                img.dirs.add(f"/home/{m.group(1)}")
            for m in re.finditer(r"chown\s+-R\s+(\w+)(?::\w+)?\s+(\S+)", text):
                img.owner[_resolve(img.workdir, m.group(2))] = m.group(1)
    assert img is not None, "no FROM"
    return img


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def image(dockerfile) -> Image:
    return final_stage(dockerfile)


# ----------------------------------------------------------------------------- .dockerignore
def _pattern_regex(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignore_rules() -> list[tuple[bool, re.Pattern]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pat = str(PurePosixPath(line.lstrip("!").strip("/")))  # Docker cleans the pattern, anchored at the root
        rules.append((negate, _pattern_regex(pat)))
    return rules


def excluded(path: str, rules) -> bool:
    """Whether the build context leaves ``path`` out: the last rule matching it or a parent folder wins."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    out = False
    for negate, rx in rules:
        if any(rx.match(c) for c in candidates):
            out = not negate
    return out


# ----------------------------------------------------------------------------- templates
def _template(kind: str) -> dict:
    return json.loads(TEMPLATES[kind].read_text())


def _defaults(t: dict) -> dict:
    return {k: v["default"] for k, v in t["variables"]["properties"].items() if "default" in v}


def _template_paths(kind: str) -> dict[str, str]:
    """Every in-container path a template mounts or sets: what -> path."""
    t, out = _template(kind), {}
    defaults = _defaults(t)
    for k, v in defaults.get("env", {}).items():
        if v.startswith("/"):
            out[f"env {k}"] = v
    for vol in defaults.get("volumes", []):
        out[f"volume {vol}"] = vol.split(":")[1]
    manifest = t["job_configuration"].get("job_manifest", {})
    for c in manifest.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
        if isinstance(c.get("workingDir"), str) and c["workingDir"].startswith("/"):
            out["workingDir"] = c["workingDir"]
        for m in c.get("volumeMounts", []) if isinstance(c.get("volumeMounts"), list) else []:
            out[f"volumeMount {m.get('name')}"] = m["mountPath"]
    return out


# ----------------------------------------------------------------------------- tests
def test_parser_reads_continuations_comments_and_variables():
    text = """# syntax=docker/dockerfile:1
ARG BASE=python:3.11-slim
FROM scratch AS wheels
FROM ${BASE}
ARG X=/opt
ENV A=1 \\
    # a comment inside the continuation
    B="two words" P=${X}/bin
WORKDIR $X/app
RUN mkdir -p data/a /var/b && useradd --create-home --uid 7 bob
COPY --chown=bob:bob . .
USER bob
"""
    img = final_stage(parse_dockerfile(text))
    assert img.base == "python:3.11-slim" and img.env == {"A": "1", "B": "two words", "P": "/opt/bin"}
    assert {"/opt/app", "/opt/app/data/a", "/var/b", "/home/bob"} <= img.dirs
    assert img.user == "bob" and img.owner["/opt/app"] == "bob"
    assert final_stage(parse_dockerfile(text), {"BASE": "nvidia/cuda:x"}).base == "nvidia/cuda:x"


@pytest.mark.parametrize("kind", sorted(TEMPLATES))
def test_every_path_the_templates_mount_or_set_exists_in_the_image(image, kind):
    paths = _template_paths(kind)
    assert f"env SALIENT_PROJECT_DIR" in paths  # the pull step of prefect.yaml changes into it
    for what, path in paths.items():
        assert path in image.dirs, f"{TEMPLATES[kind].name}: {what} -> {path}, which the image does not create " \
                                   f"(it creates {sorted(image.dirs)})"
        owner = next((o for p, o in image.owner.items() if path == p or path.startswith(p + "/")), "root")
        assert owner == image.user, f"{path} is owned by {owner}, the image runs as {image.user}"
    if kind == "docker":
        assert any(p == "/app/.dvc/cache" for p in paths.values())  # the shared DVC cache


def test_project_dir_is_the_workdir_and_where_prefect_yaml_pulls_to(image):
    assert image.env["SALIENT_PROJECT_DIR"] == image.workdir == "/app"
    assert "{{ $SALIENT_PROJECT_DIR }}" in (ROOT / "prefect.yaml").read_text()
    assert image.env["PATH"].startswith("/app/.venv/bin:")  # the stages run `python -m ...` from PATH


@pytest.mark.parametrize("kind", sorted(TEMPLATES))
def test_the_image_sets_the_telemetry_opt_outs_the_templates_set(image, kind):
    env = _defaults(_template(kind))["env"]
    assert {k: image.env.get(k) for k in env} == env
    makefile = (ROOT / "Makefile").read_text()  # and those the Makefile exports
    for k, v in re.findall(r"(\w+)=(\S+)", makefile.split("export", 1)[1].split("\n\n")[0]):
        assert image.env.get(k) == v.rstrip("\\"), k


def test_installs_the_repos_pinned_requirements(image):
    copied = {s for wd, srcs, dest, _ in image.copies if dest == image.workdir for s in srcs}
    assert {"requirements.txt", "pyproject.toml"} <= copied
    install = [text for wd, _, text in image.runs if "-r requirements.txt" in text]
    assert install and all(wd == image.workdir for wd, _, text in image.runs if "-r requirements.txt" in text)
    text = install[0]
    assert "uv pip install" in text and "|| ( pip install" in text  # uv, then plain pip as the fallback
    assert text.count("-r requirements.txt") == 2
    # torch / torchvision at requirements.txt's own pins, read from the file at build time
    assert "grep -E '^(torch|torchvision)==' requirements.txt" in text
    pins = [ln for ln in (ROOT / "requirements.txt").read_text().splitlines() if re.match(r"(torch|torchvision)==", ln)]
    assert len(pins) == 2


def test_the_project_is_installed_editable_and_checked(image):
    whole = [i for i, (wd, srcs, dest, _) in enumerate(image.copies) if srcs == ["."] and dest == "/app"]
    assert whole, "the project is not copied to /app"
    text = " ".join(t for _, _, t in image.runs)
    assert "pip install -q --no-deps -e ." in text and "pip check" in text
    last = [t for _, _, t in image.runs][-1]
    assert "--no-deps -e ." in last  # after the COPY of the project (the last RUN)


def test_the_user_is_not_root(dockerfile, image):
    assert image.user not in ("root", "0", "")
    assert any(f"useradd" in t and image.user in t for _, _, t in image.runs)
    assert image.owner.get("/app") == image.user
    # the installs run as that user too (files in /app owned by it: DVC, MLflow, Prefect write there)
    assert all(user == image.user for _, user, t in image.runs if "pip install" in t)


def test_the_cuda_build_arg_switches_the_torch_index(dockerfile):
    cpu, cuda = final_stage(dockerfile), final_stage(dockerfile, {"TORCH_INDEX": CUDA_INDEX})

    def torch_install(img):
        text = next(t for _, _, t in img.runs if "torch_pins" in t)
        return re.findall(r'--index-url "?([^"\s]+)"?\s+\$\{?torch_pins', text)

    assert cpu.args["TORCH_INDEX"].endswith("/whl/cpu")
    assert torch_install(cpu) == [cpu.args["TORCH_INDEX"]] * 2  # uv and the pip fallback
    assert torch_install(cuda) == [CUDA_INDEX] * 2
    assert final_stage(dockerfile, {"BASE": "python:3.11-bookworm"}).base == "python:3.11-bookworm"
    assert cpu.base.startswith("python:3.11")  # the venv's Python (3.11)
    # the optional local wheel folder: an empty stage unless --build-context wheels=DIR
    assert any(i.cmd == "FROM" and i.args == "scratch AS wheels" for i in dockerfile)
    assert "--mount=type=bind,from=wheels,target=/wheels" in next(t for _, _, t in cpu.runs if "torch_pins" in t)


def test_system_packages_and_no_system_ffmpeg(image):
    text = image.runs[0][2]
    assert "apt-get install" in text and " git " in text  # DVC and the pipeline flow call git
    assert "rm -rf /var/lib/apt/lists" in text
    # PyAV and decord wheels bundle their FFmpeg libraries (checked here on the installed wheels)
    import av
    import decord

    for mod in (av, decord):
        libs = Path(mod.__file__).resolve().parents[1] / f"{mod.__name__}.libs"
        assert any(p.name.startswith("libavcodec") for p in libs.iterdir()), libs


def test_dockerignore_keeps_out_heavy_and_secret_paths():
    rules = dockerignore_rules()
    for path in (".venv/bin/python", "data/prepared/manifest.csv", "mlflow.db", ".salient/prefect/x",
                 ".dvc/cache/files/md5/ab/cd", ".dvc/tmp/exps/x", ".dvc/config.local", "mlartifacts/1/a",
                 "mlruns/0/meta.yaml", "superuser.pw", ".salient/pg/superuser.pw", "deploy/db.pw", ".env",
                 "flows/.env", ".env.local", "components/__pycache__/x.pyc"):
        assert excluded(path, rules), path
    for path in ("components/data/manifest.py", "components/data/video/decode.py", "requirements.txt",
                 "pyproject.toml", "params.yaml", "dvc.yaml", "dvc.lock", "prefect.yaml", ".dvc/config",
                 ".git/HEAD", ".git/objects/pack/x.pack", "flows/pipeline.py", "Dockerfile"):
        assert not excluded(path, rules), path


def test_every_tracked_file_reaches_the_image():
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        pytest.skip("not a git checkout")
    rules = dockerignore_rules()
    left_out = [f for f in out.stdout.splitlines() if excluded(f, rules)]
    assert not left_out, left_out


@pytest.mark.parametrize("kind", sorted(TEMPLATES))
def test_templates_are_work_pool_templates_prefect_accepts(image, kind):
    from prefect.server.schemas.actions import WorkPoolCreate
    from prefect.utilities.schema_tools import is_valid_schema, validate
    from prefect.utilities.templating import apply_values, find_placeholders

    t = _template(kind)
    # what `prefect work-pool create --base-job-template` sends, validated as the server does
    WorkPoolCreate(name=f"gpu-{kind}", type=kind, base_job_template=t)
    used = {p.name for p in find_placeholders(json.dumps(t["job_configuration"]))}
    assert used <= set(t["variables"]["properties"]), used - set(t["variables"]["properties"])
    is_valid_schema(t["variables"], preprocess=False)
    defaults = _defaults(t)
    validate(defaults, t["variables"], raise_on_error=True, preprocess=False, ignore_required=True)
    rendered = apply_values(t["job_configuration"], defaults)  # as a worker renders a flow run's job
    assert rendered["env"]["SALIENT_PROJECT_DIR"] == image.workdir
    repo, _, tag = defaults["image"].partition(":")
    labels = _pairs(next(i.args for i in parse_dockerfile((ROOT / "Dockerfile").read_text()) if i.cmd == "LABEL"))
    assert repo == labels["org.opencontainers.image.title"] == "salient-worker" and tag
    assert "salient-worker" in t["variables"]["description"]
