#!/usr/bin/env bash
# `make demo`: the main job on the built-in default task, on any machine (no GPU needed).
# 1. plan: will llama-2-7b fit, how long and what cost; which layout for llama-3.1-70b.
# 2. search: the default Optuna sweep of real DeepSpeed trials of the tiny Llama on stdlib text.
# 3. report: one offline HTML page for the decision.
# 4. ladder + scale: sweep 4 sizes, fit LR/batch/loss laws, and plan a 7B target run from them;
#    the ladder's report then decides about that target run.
set -euo pipefail
cd "$(dirname "$0")/.."
TP=.venv/bin/trainplan
export TRAINPLAN_RUNS="${TRAINPLAN_RUNS:-runs}"

mkdir -p "$TRAINPLAN_RUNS"
echo "== 1. trainplan plan: llama-2-7b on 64 x A100-80GB, ZeRO-3, full checkpointing, 2T tokens (estimates)"
$TP plan --model llama-2-7b --gpu a100-80gb --gpus 64 --zero 3 --micro-batch 4 --checkpointing full --global-batch 1024 --seq-len 4096 --tokens 2T
echo
echo "== 2. trainplan plan --recommend: fastest layouts for llama-3.1-70b on up to 512 H100s"
$TP plan --model llama-3.1-70b --gpu h100-sxm --seq-len 8192 --global-batch 512 --tokens 1T \
  --recommend --max-gpus 512 --optimize time --ds-config "$TRAINPLAN_RUNS/ds_config.llama-3.1-70b.json"
echo
echo "== 3. trainplan search: the default sweep, real DeepSpeed trials of the tiny Llama on the CPU"
echo "   (the first DeepSpeed launch on a fresh machine compiles a few C++ ops: about 100 s, once)"
$TP search --run-dir "$TRAINPLAN_RUNS/search-default"
echo
echo "== 4. trainplan report: one offline HTML page for the decision"
$TP report --storage "sqlite:///$TRAINPLAN_RUNS/search-default/study.db"
echo
# Two trials at once where there are two cores: each gets one thread, and the ~15 s of launcher and
# rank start-up that every trial pays overlaps the other's training. The ladder's grid is unpruned,
# so a second worker changes no decision (a pruned search would compare against fewer finished trials).
LADDER_WORKERS=$(( $(nproc) >= 2 ? 2 : 1 ))
echo "== 5. trainplan search: the default ladder, 4 widths of the tiny Llama on one LR grid (16 real trials, $LADDER_WORKERS at once)"
$TP search search/data/default_ladder.yaml --run-dir "$TRAINPLAN_RUNS/ladder-default" --workers "$LADDER_WORKERS"
echo
echo "== 6. trainplan scale: fit the ladder, predict llama-2-7b's LR, batch, steps and loss; plan and write its launch"
$TP scale --run-dir "$TRAINPLAN_RUNS/ladder-default" --target-model llama-2-7b --tokens 2T --gpu h100-sxm \
  --max-gpus 256 --dataset-tokens 1T --report "$TRAINPLAN_RUNS/ladder-default/target/scale.html"
echo
echo "== 7. trainplan report of the ladder: the decision summary is about the 7B target (from target/scale.json)"
$TP report --storage "sqlite:///$TRAINPLAN_RUNS/ladder-default/study.db"
