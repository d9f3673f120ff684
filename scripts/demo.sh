#!/usr/bin/env bash
# The main job on the embedded toybirds data set, end to end:
# install (see scripts/_env.sh), prepare toybirds, train DAMSM, train AttnGAN (CPU preset), sample three
# captions with attention pictures, draw real test birds beside generated ones (and beside the shipped pretrained
# model's, when this checkout has it), evaluate R-precision, attribute accuracy and data-FID, print a results table.
# Every stage is step-based: the results do not depend on the machine's speed, only the time does.
#   bash scripts/demo.sh            default scale (8000 train / 1000 test birds, 64 px): DAMSM 2000 steps, AttnGAN
#                                   3 stages, 3100 steps (presets toybirds-cpu); the time on 2 cores: README, Results
#                                   of the demo
#   bash scripts/demo.sh --quick    toy scale, under 3 minutes
# Outputs go under demo/ (override with T2I_DEMO_DIR).
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
use_tcmalloc

quick=0
[ "${1:-}" = "--quick" ] && quick=1
dir=${T2I_DEMO_DIR:-demo}
mkdir -p "$dir"
t2i() { "$PY" -m t2icli "$@"; }
start=$(date +%s)
stage() { echo "== $1  [$(( $(date +%s) - start )) s]" >&2; }

if [ $quick = 1 ]; then
  prep_args=(--n-train 400 --n-test 100 --captions-per-image 5); damsm_args=(--steps 40 --batch-size 32)
  gan_args=(--steps 40 --snapshot-every 1000); n_eval=200; n_img=2; attr_steps=100
else
  prep_args=(); damsm_args=(); gan_args=(); n_eval=2000; n_img=4; attr_steps=1500
fi
rm -rf "$dir/toybirds" "$dir/damsm" "$dir/attngan" "$dir/samples" "$dir/shipped"
shipped=$("$PY" -c "from t2icli.pretrained import shipped_model; print(shipped_model() or '')")

stage "1/5 prep toybirds -> $dir/toybirds"
t2i prep toybirds --out "$dir/toybirds" "${prep_args[@]}"

stage "2/5 train damsm -> $dir/damsm"
t2i train damsm --data "$dir/toybirds" --out "$dir/damsm" --preset toybirds-cpu --no-progress "${damsm_args[@]}"

stage "3/5 train attngan (preset toybirds-cpu) -> $dir/attngan"
t2i train attngan --data "$dir/toybirds" --damsm "$dir/damsm" --out "$dir/attngan" --preset toybirds-cpu \
  --no-progress "${gan_args[@]}"

stage "4/5 sample with attention pictures -> $dir/samples"
t2i sample "a small red bird" "a large blue bird with a long yellow beak" "a green bird with a black crown and white belly" \
  --model "$dir/attngan" --out "$dir/samples" --n "$n_img" --save-attn --stage all > "$dir/samples.txt"
rvg=(--data "$dir/toybirds" --model "$dir/attngan" --label "demo")
if [ -n "$shipped" ]; then
  t2i sample "a small red bird" "a large blue bird with a long yellow beak" "a green bird with a black crown and white belly" \
    --model "$shipped" --out "$dir/shipped" --n "$n_img" --stage all >> "$dir/samples.txt"
  [ $quick = 0 ] && rvg+=(--model "$shipped" --label "shipped")  # the quick folder's vocabulary is smaller
else
  echo "   (this checkout has no shipped pretrained model, t2icli/pretrained/toybirds/: only the demo's is drawn)" >&2
fi
"$PY" scripts/real_vs_generated.py "${rvg[@]}" --out "$dir/real_vs_generated.png" --rows 8 --n 3 >> "$dir/samples.txt"

stage "5/5 eval rprecision, attr and data-FID ($n_eval generated images) -> $dir/eval.json"
t2i eval --metric all --model "$dir/attngan" --data "$dir/toybirds" --n-samples "$n_eval" --attr-steps "$attr_steps" \
  --fid-steps "$attr_steps" --json > "$dir/eval.json"

secs=$(( $(date +%s) - start ))
"$PY" - "$dir" "$secs" <<'PYEOF'
import json, sys
d, secs = sys.argv[1], int(sys.argv[2])
ev = json.load(open(f"{d}/eval.json"))["metrics"]  # one generation shared by every metric; IS needs weights
rp, at, fid = ev["rprecision"], ev["attr"], ev["fid"]
print(f"\n| metric (toybirds test captions, n={rp['n']}) | generated | real test images |")
print("| --- | --- | --- |")
print(f"| R-precision (DM-GAN protocol, 1+99, 10 folds) | {rp['mean']:.3f} ± {rp['std']:.3f} | "
      f"{rp['real']['mean']:.3f} ± {rp['real']['std']:.3f} |")
print(f"| attribute accuracy (mentioned attributes) | {at['accuracy']:.3f} | {at['real']['accuracy']:.3f} |")
print(f"| data-FID (toybirds' own feature network, vs real test) | {fid['value']:.1f} | {fid['floor']:.1f} (real train, "
      f"same n) |")
print("\npictures:")
for line in open(f"{d}/samples.txt"):
    print("  " + line.strip())
print(f"\ndemo finished in {secs} s")
PYEOF
