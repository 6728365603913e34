#!/usr/bin/env bash
# Reproduce mlkasr's shipped man-tiny weights, one run after the other: about 7 hours on one core of a 2-core AMD EPYC
# (1.3 iterations/s at batch 16), under 5 hours with CORE=0,1 THREADS=2 (2.2 iterations/s):
#   base   man-tiny x2 from scratch, 2,400 iterations (configs/zoo/man-tiny_x2.yaml);
#   x2     the base trained on for 8,000 more iterations (configs/zoo/man-tiny_x2-long.yaml), shipped as man-tiny_x2;
#   x3     the shipped x2 body with a new x3 upsampler, 6,000 iterations (configs/zoo/man-tiny_x3-long.yaml);
#   x4     the shipped x2 body with a new x4 upsampler, 8,000 iterations (configs/zoo/man-tiny_x4-long.yaml);
#   real   man-tiny_x4_real: the shipped x4 trained on for 6,000 iterations, 70% of its patches degraded by the
#          photo preset and 30% clean (configs/zoo/man-tiny_x4_real-long.yaml), shipped with its --degrade scores
#          on held-out sets under several settings (the clean x4 card gets them too).
#
#   scripts/train_zoo.sh              every step in order (a finished run is resumed at its end, not repeated:
#                                     delete runs/zoo-man-tiny_* to start over)
#   scripts/train_zoo.sh STEP         one step: base, x2, x3, x4 or real
#   scripts/train_zoo.sh save NAME    copy run NAME's newest checkpoint and log into zoo-resume/NAME (commit it)
#   scripts/train_zoo.sh restore NAME put zoo-resume/NAME back into runs/NAME, so that the step continues there
#
# Every run uses --resume auto: re-running a step after a crash or Ctrl-C continues where it stopped. A run that
# outlasts a working day is carried to the next machine with `save` (a few MB for man-tiny) and `restore`.
#   SHARED=/path/to/data scripts/train_zoo.sh       (default ../shared/data: train/T91, train/BSD200, benchmark/)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared/data}
CORE=${CORE:-1}  # the core(s) the training runs on (taskset -c); by default one, the other stays free for other work
THREADS=${THREADS:-1}  # torch threads per run: e.g. CORE=0,1 THREADS=2 on a machine given over to training

save_state() {  # save NAME: the newest verified checkpoint (+ its checksum), the config record and the log
    local run=runs/$1 keep=zoo-resume/$1 newest
    newest=$(ls "$run"/checkpoints/iter_*.pth | sort | tail -n 1)
    [[ -f $newest.sha256 ]] || { echo "train_zoo.sh: $newest has no checksum yet; try again" >&2; exit 1; }
    rm -rf "$keep" && mkdir -p "$keep"
    cp "$newest" "$newest.sha256" "$keep/"
    cp "$run"/train.log "$run"/config.yaml "$keep/"
    [[ -f $run/config_changes.yaml ]] && cp "$run/config_changes.yaml" "$keep/"
    echo "saved $(basename "$newest") of $1 in $keep"
}
restore_state() {  # restore NAME: only into a run folder that holds no newer checkpoint
    local run=runs/$1 keep=zoo-resume/$1 kept newest
    kept=$(ls "$keep"/iter_*.pth | tail -n 1)
    newest=$(ls "$run"/checkpoints/iter_*.pth 2> /dev/null | sort | tail -n 1 || true)
    if [[ -n $newest ]] && ! [[ $(basename "$newest") < $(basename "$kept") ]]; then
        echo "runs/$1 already holds $(basename "$newest"); nothing restored"
        return
    fi
    mkdir -p "$run/checkpoints"
    cp "$kept" "$kept.sha256" "$run/checkpoints/"
    cp "$keep"/train.log "$keep"/config.yaml "$run/"
    [[ -f $keep/config_changes.yaml ]] && cp "$keep/config_changes.yaml" "$run/"
    echo "restored $(basename "$kept") into $run"
}
case ${1:-all} in
    save) save_state "$2"; exit ;;
    restore) restore_state "$2"; exit ;;
esac

for need in "$SHARED/train/T91" "$SHARED/train/BSD200" "$SHARED/benchmark/Set14/HR" "$SHARED/benchmark/B100/HR"; do
    [[ -d $need ]] || { echo "train_zoo.sh: $need not found (set SHARED=...)" >&2; exit 2; }
done
# The 291-image set as one folder of links (the configs read datasets/train291).
mkdir -p datasets/train291 runs
for image in "$SHARED"/train/T91/* "$SHARED"/train/BSD200/*; do
    ln -sfn "$(realpath "$image")" "datasets/train291/$(basename "$image")"
done

pin() {  # pin to one core where taskset exists: the run then never competes with other work for a core
    if command -v taskset > /dev/null; then taskset -c "$CORE" "$@"; else "$@"; fi
}
train() {  # train CONFIG-STEM [--set K=V ...]: configs/zoo/man-tiny_<STEM>.yaml into runs/zoo-man-tiny_<STEM>
    local stem=$1
    [[ -d zoo-resume/zoo-man-tiny_$stem ]] && restore_state "zoo-man-tiny_$stem"
    echo "training man-tiny_$stem (log: runs/zoo-man-tiny_$stem/train.log)"
    OMP_NUM_THREADS=$THREADS pin nice -n 10 mlkasr train "configs/zoo/man-tiny_$stem.yaml" --resume auto --threads "$THREADS" \
        "${@:2}" > "runs/zoo-$stem.out" 2>&1 || { echo "train_zoo.sh: see runs/zoo-$stem.out" >&2; exit 1; }
}
SETS=(--set Set5=datasets/samples/Set5 --set "Set14=$SHARED/benchmark/Set14" --set "B100=$SHARED/benchmark/B100")
ship() {  # ship RUN-STEM NAME [make_model_card options]
    python scripts/make_model_card.py --run-dir "runs/zoo-man-tiny_$1" --name "$2" \
        --config "configs/zoo/man-tiny_$1.yaml" --threads "$THREADS" --training-data "T91 + BSD200 (291 images)" \
        "${SETS[@]}" "${@:3}"
    rm -rf "zoo-resume/zoo-man-tiny_$1"  # the run is finished: its carried checkpoint is no longer needed
}

step_base() { train x2; }
step_x2() {
    [[ -f runs/zoo-man-tiny_x2/model.safetensors ]] || step_base
    train x2-long --set model.init_weights=runs/zoo-man-tiny_x2/model.safetensors
    ship x2-long man-tiny_x2 --notes "continued from a 2,400-iteration man-tiny x2 (configs/zoo/man-tiny_x2.yaml): 10,400 iterations in all"
}
step_x3() { train x3-long; ship x3-long man-tiny_x3; }
step_x4() { train x4-long; ship x4-long man-tiny_x4; }
DEGRADE=(--degrade "jpeg=40,noise=5" --degrade "jpeg=60" --degrade "noise=10" --degrade "blur=1.2,noise=3,jpeg=75")
step_real() {
    train x4_real-long
    ship x4_real-long man-tiny_x4_real "${DEGRADE[@]}" \
        --notes "L1 fine-tune of the shipped man-tiny_x4: 70% of the patches degraded on the fly by the photo preset, 30% clean"
    python scripts/make_model_card.py --rescore --name man-tiny_x4 "${DEGRADE[@]}" "${SETS[@]}"
    python scripts/make_real_figure.py
}

case ${1:-all} in
    base|x2|x3|x4|real) "step_$1" ;;
    all) step_x2; step_x3; step_x4; step_real; mlkasr info ;;
    *) echo "usage: scripts/train_zoo.sh [base|x2|x3|x4|real|save NAME|restore NAME]" >&2; exit 2 ;;
esac
