#!/usr/bin/env bash
# The comparison table of the papers, reproduced on toybirds with one equal CPU budget per model:
#   gancls, stackgan (v1), stackgan2, attngan with 2 stages, attngan with 3 stages, attngan with --damsm-weight 0.
# Steps: prep toybirds -> ONE DAMSM shared by every model -> train every model x seed for the steps that one
# reference CPU-minute budget buys it, 1 torch thread each, T2I_COMPARE_JOBS at a time -> `t2i eval --metric all`
# (--json) of each -> a Markdown table (scripts/compare_table.py) with mean ± std over seeds, the real-image
# ceilings, the budget, seeds, commands, machine and date.
#
# The budget is a step count per model, not a time limit, so the table does not depend on the machine's speed:
# STEPS_PER_MINUTE below is how many steps each model trained per CPU-minute (one torch thread, two runs side by
# side) in the time-capped runs of 2026-12-06 (2-core AMD EPYC, 2048^3 sgemm ~180 GFLOP/s, commit 6990117: the
# mean of two seeds' runs of 4 minutes; the DAMSM's of its 3 minutes on both cores), and every run trains
# round(rate x T2I_COMPARE_MINUTES) steps. A slower machine takes longer for the same table.
#
#   bash scripts/compare.sh                    the full run (~60 min on 2 cores with the defaults) -> docs/RESULTS.md
#   T2I_COMPARE_OUT=/tmp/cmp T2I_COMPARE_MINUTES=0.2 T2I_COMPARE_N_TRAIN=200 T2I_COMPARE_N_TEST=50 \
#     T2I_COMPARE_DAMSM_MINUTES=0.2 T2I_COMPARE_N_EVAL=100 T2I_COMPARE_ATTR_STEPS=50 bash scripts/compare.sh
#                                              a smoke test; writes /tmp/cmp/RESULTS.md (not docs/)
#
# Environment (defaults in brackets):
#   T2I_COMPARE_MINUTES [7]        budget per model and seed in reference CPU-minutes (-> steps, see above)
#   T2I_COMPARE_SEEDS ["0 1"]      seeds (mean ± std over them)
#   T2I_COMPARE_JOBS [2]           trainings run in parallel (1 thread each; changes the time, not the table)
#   T2I_COMPARE_MODELS [all six]   a subset, e.g. "gancls attngan3"
#   T2I_COMPARE_OUT [compare]      work folder (data, runs, logs, eval JSON); if set, RESULTS.md is written there
#   T2I_COMPARE_RESULTS            the table's path [docs/RESULTS.md, or $T2I_COMPARE_OUT/RESULTS.md when that is set]
#   T2I_COMPARE_N_TRAIN [8000] T2I_COMPARE_N_TEST [1000] T2I_COMPARE_CAPTIONS [10]   toybirds counts (64 px)
#   T2I_COMPARE_DAMSM_MINUTES [3]  the shared DAMSM's budget in reference minutes on both cores (-> steps)
#   T2I_COMPARE_N_EVAL [2000]      generated images per evaluation
#   T2I_COMPARE_ATTR_STEPS [1500]  attribute-classifier training steps (trained once, cached in the data folder)
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"

minutes=${T2I_COMPARE_MINUTES:-7}
seeds=${T2I_COMPARE_SEEDS:-"0 1"}
njobs=${T2I_COMPARE_JOBS:-2}
models=${T2I_COMPARE_MODELS:-"gancls stackgan stackgan2 attngan2 attngan3 attngan3-nodamsm"}
if [ -n "${T2I_COMPARE_OUT:-}" ]; then
  out=$T2I_COMPARE_OUT; results=${T2I_COMPARE_RESULTS:-$out/RESULTS.md}
else
  out=compare; results=${T2I_COMPARE_RESULTS:-docs/RESULTS.md}
fi
n_train=${T2I_COMPARE_N_TRAIN:-8000}; n_test=${T2I_COMPARE_N_TEST:-1000}; caps=${T2I_COMPARE_CAPTIONS:-10}
damsm_minutes=${T2I_COMPARE_DAMSM_MINUTES:-3}
n_eval=${T2I_COMPARE_N_EVAL:-2000}; attr_steps=${T2I_COMPARE_ATTR_STEPS:-1500}

mkdir -p "$out/runs" "$out/logs" "$out/eval"
: > "$out/commands.txt"
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
t2i() { "$PY" -m t2icli "$@"; }
record() { printf '%s\n' "$*" >> "$out/commands.txt"; }  # the exact commands, for the table

# Steps per reference CPU-minute (see the header); StackGAN's two stages share its budget half and half, as its
# time limit did.
declare -A STEPS_PER_MINUTE=([gancls]=327.1 [stackgan-stage1]=844.5 [stackgan-stage2]=354.3 [stackgan2]=439.3
                             [attngan2]=342.5 [attngan3]=320.9 [attngan3-nodamsm]=379.0 [damsm]=458.3)
steps_for() {  # rate-key minutes -> round(rate x minutes), at least 1
  awk -v r="${STEPS_PER_MINUTE[$1]}" -v m="$2" 'BEGIN { s = int(r * m + 0.5); print (s < 1 ? 1 : s) }'
}

# -- 1. data and the shared DAMSM ----------------------------------------------------------------------
data="$out/toybirds"
if [ ! -f "$data/dataset.json" ]; then
  record "t2i prep toybirds --out $data --n-train $n_train --n-test $n_test --captions-per-image $caps"
  echo "== prep toybirds ($n_train train / $n_test test) -> $data" >&2
  t2i prep toybirds --out "$data" --n-train "$n_train" --n-test "$n_test" --captions-per-image "$caps" > "$out/logs/prep.log"
fi
damsm="$out/damsm"
if [ ! -f "$damsm/damsm.pt" ]; then
  rm -rf "$damsm"
  damsm_steps=$(steps_for damsm "$damsm_minutes")
  record "t2i train damsm --data $data --out $damsm --steps $damsm_steps --no-progress"
  echo "== train the shared DAMSM ($damsm_steps steps) -> $damsm" >&2
  t2i train damsm --data "$data" --out "$damsm" --steps "$damsm_steps" --no-progress \
    > "$out/logs/damsm.log" 2>&1
fi

# -- 2. every model x seed, one equal budget each ------------------------------------------------------
common=(--data "$data" --damsm "$damsm" --snapshot-every 1000000 --no-progress)  # snapshots: step 0 and the end
half=$(awk -v m="$minutes" 'BEGIN { print m / 2 }')
train_args() {  # model -> the t2i arguments (seed and out are added by the caller)
  local m=$1 steps
  [ "$m" = stackgan ] || steps=(--steps "$(steps_for "$m" "$minutes")")  # every rate key but StackGAN's is the model
  case $m in
    gancls)   echo train gancls --preset toybirds-cpu "${steps[@]}" --threads 1 ;;
    stackgan) echo train stackgan --preset toybirds-cpu --stage1-steps "$(steps_for stackgan-stage1 "$half")" \
                --stage2-steps "$(steps_for stackgan-stage2 "$half")" --threads 1 ;;
    stackgan2) echo train stackgan2 --preset toybirds-cpu --stages 3 "${steps[@]}" ;;
    attngan2) echo train attngan --preset toybirds-cpu --stages 2 "${steps[@]}" ;;
    attngan3) echo train attngan --preset toybirds-cpu --stages 3 "${steps[@]}" ;;
    attngan3-nodamsm) echo train attngan --preset toybirds-cpu --stages 3 --damsm-weight 0 "${steps[@]}" ;;
    *) echo "unknown model $m" >&2; return 1 ;;
  esac
}
for m in $models; do train_args "$m" > /dev/null || exit 2; done

pids=()
for s in $seeds; do
  for m in $models; do
    run="$out/runs/$m-s$s"
    if [ -f "$run/generator.pt" ]; then echo "== $m seed $s: done already ($run)" >&2; continue; fi
    rm -rf "$run"
    # shellcheck disable=SC2207
    args=($(train_args "$m"))
    record "OMP_NUM_THREADS=1 t2i ${args[*]} ${common[*]} --seed $s --out $run"
    while [ "$(jobs -rp | wc -l)" -ge "$njobs" ]; do wait -n || true; done
    echo "== $m seed $s: t2i ${args[*]} (1 thread) -> $run" >&2
    ( OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 t2i "${args[@]}" "${common[@]}" --seed "$s" --out "$run" \
        > "$out/logs/$m-s$s.log" 2>&1 || echo "!! $m seed $s failed: see $out/logs/$m-s$s.log" >&2 ) &
    pids+=($!)
  done
done
for p in "${pids[@]}"; do wait "$p" || true; done

# -- 3. evaluation (sequential, both cores) ------------------------------------------------------------
record "t2i eval --metric all --model RUN --data $data --n-samples $n_eval --attr-steps $attr_steps --fid-steps $attr_steps --json"
for s in $seeds; do
  for m in $models; do
    run="$out/runs/$m-s$s"
    [ -f "$run/generator.pt" ] || { echo "!! $m seed $s: no export, not evaluated" >&2; continue; }
    echo "== eval $m seed $s" >&2
    # R-precision, attribute accuracy and data-FID of one set of generated images (IS/Inception FID need weights)
    t2i eval --metric all --model "$run" --data "$data" --n-samples "$n_eval" --attr-steps "$attr_steps" \
      --fid-steps "$attr_steps" --json > "$out/eval/$m-s$s.json" 2>> "$out/logs/eval.log" || echo "!! eval $m $s failed" >&2
  done
done

# -- 4. the table -----------------------------------------------------------------------------------------
mkdir -p "$(dirname "$results")"
"$PY" scripts/compare_table.py --out "$out" --results "$results" --minutes "$minutes" --seeds "$seeds" \
  --jobs "$njobs" --models "$models" --started "$started" --n-eval "$n_eval" --damsm-minutes "$damsm_minutes"
echo "== wrote $results" >&2
