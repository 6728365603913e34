#!/usr/bin/env bash
# Reproduce mlkasr's shipped man-tiny weights end to end on a 2-core CPU (about 2 hours):
#   1. x4 and x2 from scratch, side by side, one core each (configs/zoo/man-tiny_x{4,2}.yaml);
#   2. x2, the shorter run, shipped into mlkasr/weights/ with its card (scripts/make_model_card.py: Set5/Set14/B100);
#   3. x3 fine-tuned from the shipped x2 body on x2's core (configs/zoo/man-tiny_x3.yaml), while x4 goes on;
#   4. x3 and x4 shipped;
#   5. man-tiny_x4_real fine-tuned from the shipped x4 on degraded LR (configs/zoo/man-tiny_x4_real.yaml, ~30 min)
#      and shipped with its `--degrade "jpeg=40,noise=5"` scores (the clean x4 card gets them too).
#   scripts/train_zoo.sh real     runs step 5 alone (the shipped man-tiny_x4 must exist).
# Every run uses --resume auto: re-running the script after a crash or Ctrl-C continues where it stopped.
#   SHARED=/path/to/data scripts/train_zoo.sh       (default ../shared/data: train/T91, train/BSD200, benchmark/)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared/data}
for need in "$SHARED/train/T91" "$SHARED/train/BSD200" "$SHARED/benchmark/Set14/HR" "$SHARED/benchmark/B100/HR"; do
    [[ -d $need ]] || { echo "train_zoo.sh: $need not found (set SHARED=...)" >&2; exit 2; }
done

# The 291-image set as one folder of links (the configs read datasets/train291).
mkdir -p datasets/train291 runs
for image in "$SHARED"/train/T91/* "$SHARED"/train/BSD200/*; do
    ln -sfn "$(realpath "$image")" "datasets/train291/$(basename "$image")"
done

pin() {  # pin to one core where taskset exists: two 1-thread runs then never compete for a core
    if command -v taskset > /dev/null; then taskset -c "$1" "${@:2}"; else "${@:2}"; fi
}
train() {  # train SCALE CORE   (SCALE: 2, 3, 4 or 4_real)
    echo "training man-tiny x$1 (log: runs/zoo-man-tiny_x$1/train.log)"
    OMP_NUM_THREADS=1 pin "$2" nice -n 10 mlkasr train "configs/zoo/man-tiny_x$1.yaml" --resume auto \
        > "runs/zoo-x$1.out" 2>&1
}
SETS=(--set Set5=datasets/samples/Set5 --set "Set14=$SHARED/benchmark/Set14" --set "B100=$SHARED/benchmark/B100")
ship() {  # ship SCALE [--final-weights]
    python scripts/make_model_card.py --run-dir "runs/zoo-man-tiny_x$1" --name "man-tiny_x$1" \
        --config "configs/zoo/man-tiny_x$1.yaml" --threads 1 --training-data "T91 + BSD200 (291 images)" \
        "${SETS[@]}" "${@:2}"
}
real() {  # the real-world x4: fine-tuned from the shipped x4, both cards with the robustness scores
    train 4_real 0 || failed 4_real
    ship 4_real --degrade "jpeg=40,noise=5" \
        --notes "L1 fine-tune of the shipped man-tiny_x4 on LR degraded on the fly by the photo preset"
    python scripts/make_model_card.py --rescore --name man-tiny_x4 --degrade "jpeg=40,noise=5" "${SETS[@]}"
    python scripts/make_real_figure.py
}

failed() { echo "train_zoo.sh: the x$1 run failed; see runs/zoo-x$1.out" >&2; exit 1; }
if [[ ${1:-} == real ]]; then real; exit; fi
train 4 0 & x4=$!
train 2 1 & x2=$!
wait $x2 || failed 2
ship 2
train 3 1 || failed 3
ship 3 --final-weights  # a 1,000-step fine-tune: its EMA still carries the fresh upsampler's start
wait $x4 || failed 4
ship 4
real
mlkasr info
