"""Every command and every option of ``salient`` has a user-facing help text (issue 26): the main
parser's subcommands, and the parsers ``serve`` and ``bench`` hand their options to."""
from __future__ import annotations

import argparse
import subprocess

import pytest

from components.app.cli import build_parser
from tests.conftest import ROOT
from tests.test_cli import salient


def _commands(ap: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _undocumented(ap: argparse.ArgumentParser) -> list[str]:
    return [a.option_strings[0] if a.option_strings else a.dest for a in ap._actions
            if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
            and (not a.help or a.help == argparse.SUPPRESS or not a.help.strip())]


def _own_parsers() -> dict[str, argparse.ArgumentParser]:
    from components.app import bench_extract as bench, bench_loop
    from flows import serve

    return {"serve": serve.build_parser(), "bench (extract ...)": bench.build_parser(),
            "bench loop": bench_loop.build_parser()}


def test_every_command_has_help():
    ap = build_parser()
    sub = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    assert set(helps) == set(_commands(ap)) and all(h and h.strip() for h in helps.values()), helps


def test_every_option_of_every_command_has_help():
    parsers = {f"salient {name}": p for name, p in _commands(build_parser()).items()} | _own_parsers()
    missing = {name: bad for name, p in parsers.items() if (bad := _undocumented(p))}
    assert not missing, f"options without help: {missing}"


def test_serve_and_bench_help_is_for_users():
    out = salient("serve", "--help", check_rc=0).stdout
    assert out.startswith("usage: salient serve") and "prefect deployment run" in out
    for dev in (":mod:", "``", "What it does, in order"):  # the module docstring is for developers
        assert dev not in out, dev
    out = salient("bench", "--help", check_rc=0).stdout
    assert "OPTIONS" in out and "\n  rest" not in out and "salient bench WHAT --help" in " ".join(out.split())


def test_the_rendered_plots_folder_is_git_ignored():
    paths = ["reports/plots/index.html", "reports/plots/curves.svg"]
    out = subprocess.run(["git", "check-ignore", *paths], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.split() == paths
    assert build_parser().parse_args(["plots"]).out == "reports/plots"


@pytest.mark.parametrize("name", ["TSQNet", "NSNET", "Uniform"])
def test_sampler_names_are_case_insensitive(name):
    from components.app.cli import resolve_name

    assert resolve_name("sampler", name, {"registered samplers": ["tsqnet", "nsnet", "uniform"]}) == name.lower()


def test_a_sampler_typo_gets_close_suggestions_in_any_case():
    from components.app.cli import resolve_name

    with pytest.raises(ValueError) as e:
        resolve_name("sampler", "TSQNett", {"registered samplers": ["tsqnet", "nsnet", "uniform"], "ablations": []})
    assert "unknown sampler 'TSQNett' (did you mean 'tsqnet'?)" in str(e.value)
    assert "registered samplers: tsqnet, nsnet, uniform" in str(e.value)
