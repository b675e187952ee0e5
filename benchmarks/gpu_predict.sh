#!/usr/bin/env bash
# One prepared GPU benchmark (issue 15): `salient predict` videos/s at batch 1 and 32 and the frame
# encoders' extraction rate at the papers' resolutions (TSQNet setting: MobileNetV2 light encoder at
# 188², EfficientNet-Lite0 object recognizer at 112², ResNet-50 recognizer at 224², T=16, K=5), on
# random-weight models and synthetic 256² videos (throughput does not depend on the weights), for
# float32 and for bfloat16 autocast + channels-last + pinned memory. One JSON: reports/bench_gpu.json.
#
#   bash benchmarks/gpu_predict.sh                 # on a GPU machine (a CUDA torch in .venv)
#   bash benchmarks/gpu_predict.sh --device cpu --tiny   # smoke check on a CPU: 4 videos, tiny sizes
#
# Each configuration is `salient bench predict --synthetic` (components/app/bench_extract.py); models and videos
# are made once in .salient/bench/gpu (or $SALIENT_BENCH_DIR) and reused.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEVICE=cuda TINY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --tiny) TINY=1; shift ;;
    *) echo "usage: $0 [--device cuda|cpu|cuda:N] [--tiny]" >&2; exit 2 ;;
  esac
done
OUT=reports/bench_gpu.json
DIR=${SALIENT_BENCH_DIR:-.salient/bench/gpu}
if [ "$TINY" = 1 ]; then
  DIR=$DIR-tiny
  SETS=(frames.T=16 frames.light_size=32 frames.object_size=32 frames.recognizer_size=32 data.synthetic.size=48
        data.synthetic.num_classes=4 encoders.light_arch=mobilenetv2_050 encoders.light_weights=none encoders.recognizer_arch=resnet10t
        tsqnet.dim=32)
  VIDEOS=4 BATCHES="1 4" CHUNK=16
else
  SETS=(frames.T=16 frames.light_size=188 frames.object_size=112 frames.recognizer_size=224 data.synthetic.size=256
        data.synthetic.num_classes=64 encoders.light_arch=mobilenetv2_100 encoders.light_weights=none
        encoders.object_arch=tf_efficientnet_lite0 encoders.object_weights=package encoders.recognizer_arch=resnet50)
  VIDEOS=64 BATCHES="1 32" CHUNK=512
fi
SET_ARGS=(); for s in "${SETS[@]}"; do SET_ARGS+=(--set "$s"); done
CONFIGS=("fp32:compute.amp=false compute.channels_last=false compute.pin_memory=false"
         "bf16:compute.amp=true compute.amp_dtype=bfloat16 compute.channels_last=true compute.pin_memory=true")
mkdir -p "$DIR" reports
parts=()
for cfg in "${CONFIGS[@]}"; do
  name=${cfg%%:*}; extra=(); for s in ${cfg#*:}; do extra+=(--set "$s"); done
  [ "$DEVICE" = cpu ] && extra+=(--set compute.pin_memory=false)  # page-locked memory needs CUDA
  echo "== $name on $DEVICE" >&2
  "$PY" -m components.app.bench_extract predict --synthetic "$DIR" --device "$DEVICE" --videos "$VIDEOS" \
    --batches $BATCHES --frame-chunk "$CHUNK" "${SET_ARGS[@]}" "${extra[@]}" \
    --out "$DIR/$name.json" > "$DIR/$name.log"
  parts+=("$name=$DIR/$name.json")
done
"$PY" - "$OUT" "${parts[@]}" <<'PYEOF'
import json, sys
from components.core.atomic import atomic_write_json
out, runs = sys.argv[1], dict(a.split("=", 1) for a in sys.argv[2:])
doc = {name: json.load(open(path)) for name, path in runs.items()}
summary = {name: {"predict_videos_per_s": {k: round(v["videos_per_s"], 2) for k, v in d["predict"]["runs"].items()},
                  "extract_models_frames_per_s": round(d["extract"]["models_in_sequence_frames_per_s"], 1),
                  "decode_frames_per_s": round(d["extract"]["decode_frames_per_s"], 1)} for name, d in doc.items()}
atomic_write_json(out, {"summary": summary, "runs": doc})
print(json.dumps(summary, indent=1))
print(f"wrote {out}", file=sys.stderr)
PYEOF
