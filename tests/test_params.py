"""The typed params loader: the real params.yaml loads; typos, wrong types and ranges fail by name."""
from pathlib import Path

import pytest
import yaml

from components.core.params import Params, ParamsError, load_params, params_from_dict, to_dict

ROOT = Path(__file__).resolve().parents[1]


def test_real_params_file_loads_and_equals_schema_defaults():
    p = load_params(ROOT / "params.yaml")
    assert isinstance(p, Params)
    # params.yaml spells out every default: the file and the schema agree
    assert to_dict(p) == to_dict(Params())


def test_overrides_shrink_the_real_config():
    p = load_params(ROOT / "params.yaml", ["data.synthetic.num_classes=3", "frames.T=8", "evaluate.budgets=[1,2]"])
    assert p.data.synthetic.num_classes == 3 and p.frames.T == 8 and p.evaluate.budgets == (1, 2)


@pytest.mark.parametrize("override, needle", [
    ({"data.synthetic.num_clases": 3}, "data.synthetic.num_clases: unknown key (did you mean data.synthetic.num_classes?)"),
    ({"frames.T": "16"}, "frames.T: expected an integer"),
    ({"frames.T": 16.0}, "frames.T: expected an integer"),
    ({"frames.T": -1}, "frames.T: -1 is outside the allowed range [1, 1024]"),
    ({"fusion.lambda_v": 1.5}, "fusion.lambda_v: 1.5 is outside the allowed range [0.0, 1.0]"),
    ({"fusion.lambda_v": -0.1}, "fusion.lambda_v: -0.1 is outside the allowed range"),
    ({"evaluate.budgets": [1, 17]}, "evaluate.budgets[1]: K=17 must satisfy 1 <= K <= frames.T=16"),
    ({"evaluate.budgets": [0]}, "evaluate.budgets[0]: K=0 must satisfy"),
    ({"evaluate.headroom_k": -3}, "evaluate.headroom_k: -3 is outside"),
    ({"encoders.recognizer_pretrained": "yes"}, "encoders.recognizer_pretrained: expected true/false"),
    ({"encoders.light_arch": "mobilenetv2_100"}, "encoders.light_weights: 'package' ships tf_efficientnet_lite0"),
    ({"data.synthetic.split": [0.5, 0.2, 0.2]}, "must be >= 0 and sum to 1"),
    ({"data.synthetic.split": [0.5, 0.5]}, "data.synthetic.split: expected 3 items"),
    ({"data.synthetic.min_frames": 400}, "data.synthetic.min_frames: 400 > data.synthetic.max_frames=300"),
    ({"data.synthetic": 3}, "data.synthetic: expected a mapping"),
    ({"bogus": 1}, "bogus: unknown key"),
])
def test_bad_values_fail_at_load_naming_the_key(override, needle):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    with pytest.raises(ParamsError) as e:
        params_from_dict(raw, override)
    assert needle in str(e.value)


def test_file_errors_name_the_file(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("frames:\n  T: 4\nevaluate:\n  budgets: [5]\n")
    with pytest.raises(ParamsError, match=r"p.yaml: evaluate.budgets\[0\]: K=5"):
        load_params(f)
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "missing.yaml")
    f.write_text("- a list\n")
    with pytest.raises(ParamsError, match="top level must be a mapping"):
        load_params(f)
    for text in ("", "seed: 0\n"):  # valid values, but dvc.yaml's ${ablations} etc. would not resolve
        f.write_text(text)
        with pytest.raises(ParamsError, match=r"p.yaml: missing top-level key\(s\) .*ablations"):
            load_params(f)


def test_params_are_frozen():
    p = Params()
    with pytest.raises(Exception):
        p.frames.T = 3  # type: ignore[misc]


def test_pipeline_seed_offsets_every_training_seed_and_keeps_the_data():
    from components.core.params import SEED_STRIDE, for_pipeline_seed

    p = load_params(ROOT / "params.yaml", ["pipeline.seeds=[0,2]"])
    assert for_pipeline_seed(p, 0) == p
    q = for_pipeline_seed(p, 2)
    assert q.train_encoders.seed == p.train_encoders.seed + 2 * SEED_STRIDE
    assert q.tsi.seed == p.tsi.seed + 2 * SEED_STRIDE and q.seed == p.seed + 2 * SEED_STRIDE
    assert q.train_sampler.seeds == tuple(s + 2 * SEED_STRIDE for s in p.train_sampler.seeds)
    assert q.data == p.data  # the videos and splits are the same for every pipeline seed
    from components.core.params import variant_params  # an ablation's own seeds are offset as well
    assert variant_params(q, "nsnet_fsm_baseline")[1].train_sampler.seeds == (2 * SEED_STRIDE,)
    with pytest.raises(ParamsError, match="pipeline seed 1 is not one of pipeline.seeds"):
        for_pipeline_seed(p, 1)
    for bad in ("[]", "[0,0]", "[-1]"):
        with pytest.raises(ParamsError, match="pipeline.seeds"):
            load_params(ROOT / "params.yaml", [f"pipeline.seeds={bad}"])


def test_seeded_paths_share_the_data_and_split_the_rest():
    from components.core.paths import Paths

    s = Paths().seeded(3)
    assert s.prepared == Path("data/prepared") and s.work == Path(".salient/work")
    assert (s.encoders, s.features, s.data) == (Path("data/s3/encoders"), Path("data/s3/features"), Path("data/s3"))
    assert (s.reports, s.results) == (Path("reports/s3"), Path("results/s3"))


def test_stage_params_resolve_matrix_items():
    from components.ops.stage_runner import stage_params

    p = load_params(ROOT / "params.yaml")
    got = stage_params("train_sampler@0-nsnet", p, ROOT / "dvc.yaml")
    assert "nsnet" in got and "tsqnet" not in got and "train_sampler" in got
    name = next(iter(p.ablations))
    got = stage_params(f"ablate@0-{name}", p, ROOT / "dvc.yaml")
    assert got["ablations"] == {name: to_dict(p.ablations[name])}
    assert "evaluate" in stage_params("evaluate@0", p, ROOT / "dvc.yaml")


def test_ablation_names_cannot_hold_the_matrix_separator():
    """'-' joins a DVC matrix item's values (ablate@0-<name>): a name holding one would be ambiguous."""
    with pytest.raises(ParamsError, match="not a valid name"):
        load_params(ROOT / "params.yaml", ["ablations={a-b: {sampler: nsnet, set: [nsnet.fem=mlp]}}"])


def test_an_ablation_can_be_built_on_any_learned_sampler_a_plugin_included():
    from components.core.params import variant_params

    with pytest.raises(ParamsError, match=r"ablations.x.sampler: 'foo' is not a learned sampler; one of "
                                          r"\['tsqnet', 'nsnet', 'avgn'\]"):
        load_params(ROOT / "params.yaml", ["ablations={x: {sampler: foo, set: []}}"])
    plugin = "plugins={motion: {threshold: 0.5}}"
    with pytest.raises(ParamsError, match=r"'motion.threshold=0.2' must be plugins.motion.<key>=<value> or train_sampler"):
        load_params(ROOT / "params.yaml", [plugin, "ablations={x: {sampler: motion, set: [motion.threshold=0.2]}}"])
    with pytest.raises(ParamsError, match=r"'tsqnet.branches=vqm' must be nsnet.<key>=<value>"):
        load_params(ROOT / "params.yaml", ["ablations={x: {sampler: nsnet, set: [tsqnet.branches=vqm]}}"])
    p = load_params(ROOT / "params.yaml", [plugin, "ablations={x: {sampler: motion, set: [plugins.motion.threshold=0.2]}}"])
    base, q = variant_params(p, "x")
    assert base == "motion" and q.plugins == {"motion": {"threshold": 0.2}} and p.plugins["motion"]["threshold"] == 0.5
