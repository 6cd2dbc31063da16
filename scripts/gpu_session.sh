#!/usr/bin/env bash
# One GPU session, side by side: the paper's comparison (issue 15: nine networks, one recipe,
# trained in parallel processes, then scored and timed one at a time on an idle GPU), three
# RFBSNet fine-tune arms (issue 11) stopped by the same wall-time limit, and the end-to-end
# latency of PyTorch on the GPU. Results: docs/results/gpu_h200/.
#
#   bash scripts/gpu_session.sh pack     # here: .gpu/ = the labelled train stacks and the T2W test
#                                        # stacks (xz), the nibabel wheel, this script, the revision
#   OUT=... bash .gpu/gpu_session.sh run # on the GPU machine, from the repository root
#
# The machine has PyTorch but no registry, so nibabel travels as a wheel; the data travel as one
# xz archive of uncompressed NIfTI (float stacks stored as scaled int16, at most 0.025 off) to fit
# the 64 MiB the tree may take. Settings come from the environment, so the same script is dry-run
# on the CPU first (DEVICE=cpu LIMIT=0.01 STEPS=2 ARM_STEPS=3).
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
  cp "$0" .gpu/gpu_session.sh && git rev-parse --short=12 HEAD > .gpu/revision
  du -sh .gpu
  ;;
run)
  DEVICE=${DEVICE:-cuda}; LIMIT=${LIMIT:-5}; STEPS=${STEPS:-3000}; ARM_STEPS=${ARM_STEPS:-100000}
  GUARD=${GUARD:-470}; ARMS=${ARMS:-1}; LATENCY=${LATENCY:-1}; WORK=${WORK:-/tmp/work}; SITE=${SITE:-/tmp/site}
  START=$(date +%s)
  export PYTHONUNBUFFERED=1
  [ "$DEVICE" = cuda ] && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --target "$SITE" .gpu/whl/*.whl
  export PYTHONPATH=$SITE:$PWD/FetalBrainSeg FETALBRAINSEG_REVISION=$(cat .gpu/revision)
  mkdir -p "$WORK/data" && xz -dc .gpu/data.tar.xz | tar xf - -C "$WORK/data"
  ls "$WORK"/data/fetal-mri/*/*.nii | xargs -P 16 -n 1 gzip -1
  nvidia-smi -L 2>/dev/null
  FBS="python3 -m FetalBrainSegLib.cli"
  M=$WORK/data/fetal-mri/manifest.csv
  VAL="e2mip_training_0003 e2mip_training_0004 mial_t30_coronal1 e2mip_sample_dwi_0633s1_B0"
  VAL="$VAL e2mip_train_slice_DWI_vol0003 e2mip_train_slice_DWI_vol0004"  # the shipped weights' validation stacks
  arm() {
    local name=$1; shift
    OMP_NUM_THREADS=1 $FBS train --manifest "$M" -o "$WORK/$name" --device "$DEVICE" --modalities T2W EPI \
      --steps "$ARM_STEPS" --crop-size 0 --batch-size 32 --epoch-steps 100 --time-limit "$LIMIT" \
      --model-option norm=batch --init weights/rfbsnet_fetal_brain.pt --loss dice_ce --val-stacks $VAL --quiet \
      "$@" > "$WORK/$name.out" 2>&1
  }
  if [ "$ARMS" = 1 ]; then
    arm ft_standard &
    arm ft_strong --intensity strong &
    arm ft_strong_lr3 --intensity strong --lr 3e-4 &
  fi
  timeout "$GUARD" $FBS benchmark --comparison --manifest "$M" --runs-dir "$WORK/comparison" --steps "$STEPS" \
    --parallel 9 --time-limit "$LIMIT" --device "$DEVICE" --repeats 100 -o "$WORK/results" > "$WORK/comparison.out" 2>&1
  echo "comparison exit $? at $(( $(date +%s) - START )) s"
  wait
  if [ "$LATENCY" = 1 ]; then
    timeout $(( GUARD + 80 - ($(date +%s) - START) )) $FBS benchmark --latency --device "$DEVICE" --backends torch \
      --repeats 50 --stack "$WORK/data/fetal-mri/images/e2mip_testing_0001.nii.gz" --manifest "$M" \
      -o "$WORK/latency" > "$WORK/latency.out" 2>&1
    echo "latency exit $? at $(( $(date +%s) - START )) s"
  fi
  (cd "$WORK" && tar czf "$OUT/results.tar.gz" --ignore-failed-read results latency ./*.out \
    comparison/*/train.log comparison/*/report.json comparison/*/montage.npz ft_*/train.log)
  if [ "$ARMS" = 1 ]; then
    for name in ft_standard ft_strong ft_strong_lr3; do cp "$WORK/$name/best.pt" "$OUT/$name.best.pt"; done
  fi
  tail -n 3 "$WORK"/*.out
  echo "done at $(( $(date +%s) - START )) s"
  ;;
*)
  echo "usage: bash scripts/gpu_session.sh pack | run" >&2
  exit 2
  ;;
esac
