#!/usr/bin/env bash
# One GPU session, side by side: the paper's comparison (issue 15: nine networks, one recipe,
# trained in parallel processes, then scored and timed one at a time on an idle GPU; COMPARISON=0
# leaves it out), RFBSNet fine-tune arms (issue 11) stopped by the same wall-time limit, and
# optionally the end-to-end latency of PyTorch on the GPU. Results: docs/results/gpu_h200/.
# ARMS lists the arms as "ft_NAME=train options" separated by ';' (names start with ft_, which
# `collect` looks for); ARM_THREADS is each arm's share of the CPU cores.
#
#   bash experiments/gpu_session.sh pack [INIT.pt] # here: .gpu/ = the labelled train stacks and the
#                                        # T2W test stacks (xz), the nibabel wheel, this script, the
#                                        # revision, and the arms' starting weights in fp16
#   OUT=... bash .gpu/gpu_session.sh start    # on the GPU machine, from the repository root:
#                                        # `run` detached (setsid), so it outlives the call
#   OUT=... WAIT=S bash .gpu/gpu_session.sh collect   # waits up to S s for the run to end, then
#                                        # leaves in $OUT whatever it has written so far
#
# A call may last 10 minutes and the session's device time is 15, so the run is started
# detached in one call and collected by the next; `collect` always packs what is there, so a
# run stopped by the time budget still returns its logs and finished reports.
# The machine has PyTorch but no registry, so nibabel travels as a wheel; the data travel as one
# xz archive of uncompressed NIfTI (float stacks stored as scaled int16, at most 0.025 off) to fit
# the 64 MiB the tree may take; the arms' weights travel in fp16 for the same reason (training
# continues in fp32). Settings come from the environment, so the same script is dry-run on the
# CPU first (DEVICE=cpu LIMIT=0.01 STEPS=2 ARM_STEPS=3 WORK=/tmp/dry OUT=/tmp/dry_out).
set -u
case "${1:-}" in
pack)
  mkdir -p .gpu/whl /tmp/gpu_pack/fetal-mri/images /tmp/gpu_pack/fetal-mri/masks
  grep -qx "/.gpu/" .git/info/exclude 2>/dev/null || echo "/.gpu/" >> .git/info/exclude
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_17_x86_64 -d .gpu/whl nibabel==5.4.2
  .venv/bin/python - <<'PY'
import csv
import nibabel as nib
import numpy as np
src, dst = "../shared/data/fetal-mri", "/tmp/gpu_pack/fetal-mri"
rows = list(csv.DictReader(open(f"{src}/manifest.csv", newline="")))
keep = [r for r in rows if r["mask"].strip().lower() == "yes"
        and (r["split"] == "train" or (r["split"] == "test" and r["modality"] == "T2W"))]
with open(f"{dst}/manifest.csv", "w", newline="") as handle:
    writer = csv.DictWriter(handle, list(rows[0]))
    writer.writeheader()
    writer.writerows(keep)
for row in keep:
    for folder in ("images", "masks"):
        image = nib.load(f"{src}/{folder}/{row['name']}.nii.gz")
        if image.get_data_dtype() == np.float32:
            image = nib.Nifti1Image(np.asarray(image.dataobj, np.float32), image.affine, image.header.copy())
            image.set_data_dtype(np.int16)  # scaled: nibabel picks the slope
        nib.save(image, f"{dst}/{folder}/{row['name']}.nii")
PY
  tar cf - -C /tmp/gpu_pack fetal-mri | xz -9 -T2 > .gpu/data.tar.xz
  rm -f .gpu/arm_init.pt
  if [ -n "${2:-}" ]; then
    .venv/bin/python - "$2" <<'PY'
import sys
import torch
record = torch.load(sys.argv[1], weights_only=False)
record["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in record["state_dict"].items()}
torch.save(record, ".gpu/arm_init.pt")
PY
  fi
  cp "$0" .gpu/gpu_session.sh && git rev-parse --short=12 HEAD > .gpu/revision
  du -sh .gpu
  ;;
run)
  DEVICE=${DEVICE:-cuda}; LIMIT=${LIMIT:-5}; STEPS=${STEPS:-3000}; ARM_STEPS=${ARM_STEPS:-100000}
  GUARD=${GUARD:-900}; LATENCY=${LATENCY:-0}; WORK=${WORK:-/tmp/work}; SITE=${SITE:-/tmp/site}
  COMPARISON=${COMPARISON:-1}; ARM_THREADS=${ARM_THREADS:-1}
  ARMS=${ARMS-"ft_strong_lr1=--intensity strong;ft_strong_lr3=--intensity strong --lr 3e-4"}
  START=$(date +%s)
  export PYTHONUNBUFFERED=1
  [ "$DEVICE" = cuda ] && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --target "$SITE" .gpu/whl/*.whl
  export PYTHONPATH=$SITE:$PWD/FetalBrainSeg FETALBRAINSEG_REVISION=$(cat .gpu/revision)
  mkdir -p "$WORK/data" && xz -dc .gpu/data.tar.xz | tar xf - -C "$WORK/data"
  ls "$WORK"/data/fetal-mri/*/*.nii | xargs -P 16 -n 1 gzip -1
  nvidia-smi -L 2>/dev/null
  echo "data ready at $(( $(date +%s) - START )) s"
  FBS="python3 -m FetalBrainSegLib.cli"
  M=$WORK/data/fetal-mri/manifest.csv
  INIT=weights/rfbsnet_fetal_brain.pt  # rebuilt from the shipped ONNX model
  [ -f .gpu/arm_init.pt ] && INIT=.gpu/arm_init.pt
  arm() {  # niced: the comparison's processes come first on the CPU cores
    local name=$1; shift
    OMP_NUM_THREADS=$ARM_THREADS nice -n 10 $FBS train --manifest "$M" -o "$WORK/$name" --device "$DEVICE" \
      --modalities T2W EPI --steps "$ARM_STEPS" --crop-size 0 --batch-size 32 --epoch-steps 100 \
      --time-limit "$ARM_LIMIT" --model-option norm=batch --init "$INIT" --loss dice_ce --val-stacks-from "$INIT" --quiet \
      "$@" > "$WORK/$name.out" 2>&1
  }
  ARM_LIMIT=$LIMIT
  [ "$COMPARISON" = 1 ] && ARM_LIMIT=$(python3 -c "print(max(0.01, $LIMIT - 0.5))")  # done before its timing starts
  IFS=';' read -ra specs <<< "$ARMS"
  for spec in "${specs[@]}"; do
    # shellcheck disable=SC2086  # the options split into words on purpose
    arm "${spec%%=*}" ${spec#*=} &
  done
  if [ "$COMPARISON" = 1 ]; then
    timeout "$GUARD" python3 -m experiments.comparison --manifest "$M" --runs-dir "$WORK/comparison" --steps "$STEPS" \
      --parallel 9 --time-limit "$LIMIT" --device "$DEVICE" --repeats 100 -o "$WORK/results" > "$WORK/comparison.out" 2>&1
    echo "comparison exit $? at $(( $(date +%s) - START )) s"
  fi
  wait
  echo "arms done at $(( $(date +%s) - START )) s"
  if [ "$LATENCY" = 1 ]; then
    $FBS benchmark --latency --device "$DEVICE" --backends torch --repeats 50 \
      --stack "$WORK/data/fetal-mri/images/e2mip_testing_0001.nii.gz" --manifest "$M" \
      -o "$WORK/latency" > "$WORK/latency.out" 2>&1
    echo "latency exit $? at $(( $(date +%s) - START )) s"
  fi
  echo "done at $(( $(date +%s) - START )) s"
  ;;
start)
  WORK=${WORK:-/tmp/work}
  mkdir -p "$WORK"
  setsid nohup bash "$0" run > "$WORK/session.log" 2>&1 < /dev/null &
  echo "started"
  ;;
collect)
  WORK=${WORK:-/tmp/work}; WAIT=${WAIT:-60}
  END=$(( $(date +%s) + WAIT ))
  until grep -q "^done at" "$WORK/session.log" 2>/dev/null || [ "$(date +%s)" -ge "$END" ]; do sleep 5; done
  (cd "$WORK" && tar czf "$OUT/results.tar.gz" --ignore-failed-read session.log results latency ./*.out \
    comparison/*/train.log comparison/*/report.json comparison/*/montage.npz ft_*/train.log 2>/dev/null)
  for run in "$WORK"/ft_*/; do
    [ -f "$run/best.pt" ] && cp "$run/best.pt" "$OUT/$(basename "$run").best.pt"
  done
  cat "$WORK/session.log"
  tail -n 2 "$WORK"/*.out 2>/dev/null
  for log in "$WORK"/comparison/*/train.log "$WORK"/ft_*/train.log; do
    [ -f "$log" ] && echo "$(basename "$(dirname "$log")"): $(tail -n 1 "$log" | cut -c 1-60)"
  done
  ;;
*)
  echo "usage: bash experiments/gpu_session.sh pack [INIT.pt] | run | start | collect" >&2
  exit 2
  ;;
esac
