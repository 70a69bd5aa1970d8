#!/usr/bin/env bash
# I-JEPA vs DINO vs MAE at one budget: train the DINO and MAE checkpoints the kit ships next to
# the I-JEPA one, export them (each <= 10 MB, with its training log), and evaluate the three with
# the demo's protocol (the README's objectives table; bench/RESULTS.md keeps the runs).
#
#   bash bench/objectives.sh                # gpu-phantom budget with CUDA, else cpu-long
#   bash bench/objectives.sh gpu-phantom    # 8000 steps x batch 128, the shipped JEPA's recipe
#   bash bench/objectives.sh cpu-long       # 3000 steps x batch 64: also trains and ships a JEPA
#                                           # run of that budget (radjepa_lab_phantom_jepa.pt)
#   bash bench/objectives.sh cpu            # 800 x 64, the `cpu` preset's steps: ships all three
#                                           # as well (the shipped set now)
#
# gpu-phantom reuses the shipped JEPA (data/checkpoints/radjepa_lab_phantom.pt, that very recipe);
# RETRAIN_JEPA=1 trains it again here (and evaluates that run, without replacing the shipped file)
# so that images/s is measured on the same GPU for all three.
# A run that is stopped (Ctrl-C, a lost session) continues where it stopped when this script is
# started again. Environment: PY (python, default .venv/bin/python), OUT (default
# runs/objectives/<budget>), PROFILE (probe sizes of bench/quality.py, default cpu), STEPS (a
# shorter trial of the pipeline: --steps N for every run; it ships nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
budget=${1:-auto}
if [ "$budget" = auto ]; then
  if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    budget=gpu-phantom
  else
    budget=cpu-long
  fi
fi
case "$budget" in gpu-phantom|cpu-long|cpu) ;; *) echo "budget must be gpu-phantom, cpu-long or cpu" >&2; exit 2;; esac
OUT=${OUT:-runs/objectives/$budget}
SHIP=data/checkpoints
objectives="dino mae"
if [ "$budget" != gpu-phantom ] || [ "${RETRAIN_JEPA:-0}" = 1 ]; then objectives="jepa dino mae"; fi

for o in $objectives; do
  preset=$budget; [ "$o" = jepa ] || preset="$o-$budget"
  resume=(); [ -f "$OUT/$o/checkpoint.pt" ] && resume=(--resume)
  echo "== $o: radjepa-lab pretrain --preset $preset --out $OUT/$o ${resume[*]:-}"
  start=$(date +%s)
  steps=(); [ -n "${STEPS:-}" ] && steps=(--steps "$STEPS")
  "$PY" -m radjepa_lab pretrain --preset "$preset" --out "$OUT/$o" --no-progress "${resume[@]}" \
    "${steps[@]}"
  echo "== $o: $(( $(date +%s) - start )) s"
done

ship() {  # export_checkpoint: float16, no optimiser, the run's metrics.jsonl beside the copy
  "$PY" -c "import sys; from radjepa_lab.checkpoints import export_checkpoint; p = export_checkpoint(sys.argv[1], sys.argv[2]); print(f'{p}: {p.stat().st_size / 2**20:.1f} MB')" "$1" "$2"
}
jepa=$OUT/jepa/checkpoint.pt dino=$OUT/dino/checkpoint.pt mae=$OUT/mae/checkpoint.pt
if [ -z "${STEPS:-}" ]; then
  for o in dino mae; do ship "$OUT/$o/checkpoint.pt" "$SHIP/radjepa_lab_phantom_$o.pt"; done
  dino=$SHIP/radjepa_lab_phantom_dino.pt mae=$SHIP/radjepa_lab_phantom_mae.pt
  if [ "$budget" != gpu-phantom ]; then  # the comparison's JEPA must have the same budget
    ship "$OUT/jepa/checkpoint.pt" "$SHIP/radjepa_lab_phantom_jepa.pt"
    jepa=$SHIP/radjepa_lab_phantom_jepa.pt
  elif [ "${RETRAIN_JEPA:-0}" != 1 ]; then
    jepa=$SHIP/radjepa_lab_phantom.pt  # trained with exactly this recipe (a test checks it)
  fi
fi
"$PY" bench/quality.py --checkpoint "$jepa" --name I-JEPA --checkpoint "$dino" --name DINO \
  --checkpoint "$mae" --name MAE --profile "${PROFILE:-cpu}" --out "$OUT/quality" --no-progress
