#!/usr/bin/env bash
# Does `train --fov-cut` teach the network tightly cropped stacks? (issue 11: with the weights shipped
# on 2026-11-26, cropping 30 of an EPI slice's 128 voxels per side loses almost all the brain.)
# Two arms fine-tune the shipped weights for the same wall time on the CPU, one thread each, side by
# side: with 30% of the slices cut to a smaller field of view, and without (the control). Then the
# robustness cases are measured on the weights' own validation stacks, never the test split.
#
#   bash experiments/fov_cut_experiment.sh [RUNS_DIR] [MINUTES]   # writes docs/results/fov_cut/
#   MEASURE_ONLY=1 bash experiments/fov_cut_experiment.sh RUNS_DIR # the measurements of finished arms
set -eu
RUNS=${1:-runs/fov_cut}; MINUTES=${2:-35}
OUT=docs/results/fov_cut
arm() {
  local name=$1; shift
  OMP_NUM_THREADS=1 fetalbrainseg train -o "$RUNS/$name" --init weights/rfbsnet_fetal_brain.pt --crop-size 0 \
    --batch-size 8 --epoch-steps 100 --loss dice_ce --model-option norm=batch --modalities T2W EPI \
    --intensity strong --steps 100000 --time-limit "$MINUTES" \
    --val-stacks-from weights/rfbsnet_fetal_brain.pt --quiet "$@"
}
if [ -z "${MEASURE_ONLY:-}" ]; then
  arm cut --fov-cut 0.3 &
  arm control &
  wait
fi
mkdir -p "$OUT"
python -m experiments.robustness --stacks validation -o "$OUT/shipped"
for name in cut control; do
  python -m experiments.robustness --stacks validation --weights "$RUNS/$name/last.pt" -o "$OUT/$name"
done
