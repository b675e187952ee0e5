"""TSQNet checks on **val** (not part of the pipeline; nothing here reads the test split).

    python experiments/tsqnet_checks.py <demo workspace>

Trains TSQNet on the workspace's feature store exactly as ``train_sampler`` does (one engine,
val_map early stopping) for the seeds of ``train_sampler.seeds`` under three settings, and prints
the val objective (branch top-K mAP, and fused mAP at lambda_v 0.3 / 0.6 / 1.0, K in
train_sampler.val_budgets):

* ``default``: params.yaml as it is;
* ``prior_attention_init``: the query path starts with the frame path's weights (query_proj =
  frame_proj, each layer's W_q = W_k = I), so the prototype prior shapes the first attention (a
  patch applied here, not in the library);
* ``no_swap``: alpha = beta = 0 (no eq. 3 losses).

Before training it also prints recall@3 on val of the *untrained* VQM's true-class attention row
under the patched init (how well the prototypes alone localise the salient frames).
Output: tsqnet_checks.txt beside this file.
"""
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from components.evaluation.metrics import salient_mask, salient_recall  # noqa: E402
from components.models.samplers import create_sampler  # noqa: E402
from components.models.samplers import tsqnet as tsq  # noqa: E402
from components.core.params import load_params  # noqa: E402
from components.store.sampler_data import load_split  # noqa: E402
from components.core.selection import topk_select  # noqa: E402
from components.core.paths import Paths  # noqa: E402
from components.training.sampler_training import load_train_val, sampler_kwargs, train_one  # noqa: E402
from components.store.feature_store import FeatureStore  # noqa: E402
from components.training.val_objective import branch_val_score, load_val, sampler_val_score  # noqa: E402

root = Path(sys.argv[1])
paths = Paths().under(root)
store = FeatureStore(paths.features)
base = load_params(root / "params.yaml")
data = load_train_val(store, paths)
val = load_val(base, paths, store)
original_init = tsq.TSQModule.__init__


def prior_attention_init(self, in_dim, num_classes, p, prior, max_frames, name):
    original_init(self, in_dim, num_classes, p, prior, max_frames, name)
    if p.init == "prior":
        with torch.no_grad():
            self.query_proj.load_state_dict(self.frame_proj.state_dict())
            for layer in self.layers:
                nn.init.eye_(layer.attn.k.weight)
                layer.attn.q.weight.copy_(layer.attn.k.weight)


tsq.TSQModule.__init__ = prior_attention_init
vdata, _ = load_split(store, "val")
valid = np.asarray(store.array("val", "valid"), bool)
labels = np.asarray(store.array("val", "labels"))[valid]
sal = salient_mask(np.asarray(store.array("val", "gt"))[valid], labels)
torch.manual_seed(0)
m = create_sampler("tsqnet", **sampler_kwargs("tsqnet", base, store, 0)).eval()
with torch.no_grad():
    A = m(vdata).aux["A_v"].numpy()
y = labels.argmax(1)
print(f"untrained VQM, prior_attention_init: true-class attention row recall@3 on val "
      f"{salient_recall(topk_select(A[np.arange(len(y)), y], 3), sal):.3f}", flush=True)

for setting, overrides, patched in (("default", [], False), ("prior_attention_init", [], True),
                                    ("no_swap", ["tsqnet.alpha=0", "tsqnet.beta=0"], False)):
    tsq.TSQModule.__init__ = prior_attention_init if patched else original_init
    p = load_params(root / "params.yaml", overrides)
    rows = []
    for seed in p.train_sampler.seeds:
        ckpt = paths.work / "experiments" / "tsqnet_checks" / setting / str(seed)
        shutil.rmtree(ckpt, ignore_errors=True)  # a fresh run, never a resume
        model = train_one(p, paths, "tsqnet", seed, store=store, data=data, ckpt_dir=ckpt).model
        rows.append([branch_val_score(model, data[1], val, p.train_sampler.val_budgets)]
                    + [sampler_val_score(model, data[1], val, {"lambda_v": lam}) for lam in (0.3, 0.6, 1.0)])
    r = np.mean(rows, 0)
    print(f"{setting}: val branch mAP {r[0]:.4f}; fused at lambda_v 0.3 / 0.6 / 1.0: "
          f"{r[1]:.4f} / {r[2]:.4f} / {r[3]:.4f} (mean of {len(rows)} seeds)", flush=True)
