#!/usr/bin/env bash
# Train the pretrained toybirds model that ships in t2icli/pretrained/toybirds/ (what `t2i sample` uses without
# --model), from scratch, by the presets `toybirds-pretrained` of `t2i train damsm` and `t2i train attngan`:
#   1. t2i prep toybirds (the default folder: a user's fresh `t2i prep toybirds` is the same data, same vocabulary)
#   2. t2i train damsm    --preset toybirds-pretrained
#   3. t2i train attngan  --preset toybirds-pretrained
#   4. t2i eval --metric all (n=2000, the issue's protocol) -> eval.json
#   5. install generator.pt + damsm.pt + config.json + damsm_config.json + eval.json into t2icli/pretrained/toybirds/,
#      and the two evaluation networks step 4 used (attribute classifier, data-FID network: the shipped ones when the
#      data is the default prep's, else trained) into t2icli/pretrained/evaluators/ (t2i eval on a fresh default prep
#      then scores with them instead of training its own)
# Step-based: the model does not depend on the machine's speed, only the time does, on 2-core AMD EPYCs: the AttnGAN
# (3 stages, 12000 steps of 16) at 38.5 img/s where the 2048^3 sgemm runs at 182 GFLOP/s (its first 9000 steps 3737 s,
# so ~5000 s) when the shipped model was trained, ~1.2x that since D's conditional head stopped tiling the sentence
# (~4100 s), the DAMSM 863 s at 225 img/s where it runs at 168, eval 20 s with the shipped networks (~4 min more where
# it trains its evaluation networks): estimated about 83 minutes at 182 GFLOP/s, 90 at 168, but measured end to end
# (2026-12-05, with --natural-edits in both presets, ~4% dearer DAMSM) 6720 s = 112 minutes on a 167.7 GFLOP/s box:
# DAMSM 952 s at 204 img/s, AttnGAN 5735 s at 34.9 img/s (README: the last 3000 steps meet the data-FID target).
# The caption edits of the presets (--hard-negatives 2 on both, --edited-wrong 0.5 on the GAN) cost the DAMSM about a
# third of its speed and the GAN little. The script now allocates with tcmalloc where the system has it (use_tcmalloc,
# scripts/_tcmalloc.sh; the same bits): this preset's AttnGAN step 1.04x (0.97-1.09), the demo's DAMSM step 1.11x,
# so about 107 minutes on that box (estimated from those ratios, not measured end to end).
# The model shipped now (2026-12-06, the DAMSM preset with --word-prediction 1; the AttnGAN preset's --ema-beta 0.9995
# changes what is sampled, not the run's time): 5037 s = 84 minutes on a box whose
# sgemm ran at 184.3 GFLOP/s (prep 7 s, DAMSM 718 s at 265 img/s, AttnGAN 4299 s at 45.5 img/s, eval 13 s; the
# steps run one after the other as here, the DAMSM by a trial wrapper of the same bits).
#   bash scripts/train_pretrained.sh            work folder runs/pretrained (override with T2I_PRETRAINED_DIR)
#   bash scripts/train_pretrained.sh --no-install   train and evaluate only
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
use_tcmalloc

install=1
[ "${1:-}" = "--no-install" ] && install=0
dir=${T2I_PRETRAINED_DIR:-runs/pretrained}
mkdir -p "$dir"
t2i() { "$PY" -m t2icli "$@"; }
start=$(date +%s)
stage() { echo "== $1  [$(( $(date +%s) - start )) s]" >&2; }
rm -rf "$dir/toybirds" "$dir/damsm" "$dir/attngan"

stage "1/5 prep toybirds -> $dir/toybirds"
t2i prep toybirds --out "$dir/toybirds"
stage "2/5 train damsm (preset toybirds-pretrained) -> $dir/damsm"
t2i train damsm --data "$dir/toybirds" --out "$dir/damsm" --preset toybirds-pretrained --no-progress
stage "3/5 train attngan (preset toybirds-pretrained) -> $dir/attngan"
t2i train attngan --data "$dir/toybirds" --damsm "$dir/damsm" --out "$dir/attngan" --preset toybirds-pretrained \
  --no-progress
stage "4/5 eval rprecision, attr and data-FID (2000 generated images) -> $dir/eval.json"
t2i eval --metric all --model "$dir/attngan" --data "$dir/toybirds" --n-samples 2000 --json > "$dir/eval.json"
if [ $install = 1 ]; then
  stage "5/5 install -> t2icli/pretrained/toybirds"
  "$PY" -c 'import sys; from t2icli.pretrained import install_model; print(install_model(*sys.argv[1:]))' \
    "$dir/attngan" "$dir/damsm" "$dir/eval.json"
  "$PY" -c 'import sys; from t2icli.pretrained import install_evaluators; print(*install_evaluators(sys.argv[1]))' \
    "$dir/toybirds"
  du -sh t2icli/pretrained/toybirds t2icli/pretrained/evaluators >&2
fi
stage "done"
