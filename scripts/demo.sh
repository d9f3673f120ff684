#!/usr/bin/env bash
# The main job on the embedded toybirds data set, end to end:
# install (see scripts/_env.sh), prepare toybirds, train DAMSM, train AttnGAN (CPU preset), sample three
# captions with attention pictures, evaluate R-precision, attribute accuracy and data-FID, print a results table.
#   bash scripts/demo.sh            default scale (8000 train / 1000 test birds, 64 px), ~15 minutes on 2 cores
#   bash scripts/demo.sh --quick    toy scale, a few minutes
# Outputs go under demo/ (override with T2I_DEMO_DIR).
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"

quick=0
[ "${1:-}" = "--quick" ] && quick=1
dir=${T2I_DEMO_DIR:-demo}
mkdir -p "$dir"
t2i() { "$PY" -m t2icli "$@"; }
start=$(date +%s)

if [ $quick = 1 ]; then
  prep_args=(--n-train 400 --n-test 100 --captions-per-image 5); damsm_args=(--max-minutes 0.5 --batch-size 32)
  gan_args=(--steps 40 --max-minutes 0.5 --snapshot-every 1000); n_eval=200; n_img=2; attr_steps=100
else
  prep_args=(); damsm_args=(--max-minutes 3); gan_args=(); n_eval=2000; n_img=4; attr_steps=1500
fi
rm -rf "$dir/toybirds" "$dir/damsm" "$dir/attngan" "$dir/samples"

echo "== 1/5 prep toybirds -> $dir/toybirds" >&2
t2i prep toybirds --out "$dir/toybirds" "${prep_args[@]}"

echo "== 2/5 train damsm -> $dir/damsm" >&2
t2i train damsm --data "$dir/toybirds" --out "$dir/damsm" "${damsm_args[@]}"

echo "== 3/5 train attngan (preset toybirds-cpu) -> $dir/attngan" >&2
t2i train attngan --data "$dir/toybirds" --damsm "$dir/damsm" --out "$dir/attngan" --preset toybirds-cpu \
  --no-progress "${gan_args[@]}"

echo "== 4/5 sample with attention pictures -> $dir/samples" >&2
t2i sample "a small red bird" "a large blue bird with a long yellow beak" "a green bird with a black crown and white belly" \
  --model "$dir/attngan" --out "$dir/samples" --n "$n_img" --save-attn --stage all > "$dir/samples.txt"

echo "== 5/5 eval rprecision, attr and data-FID ($n_eval generated images) -> $dir/eval_*.json" >&2
t2i eval --metric rprecision --model "$dir/attngan" --data "$dir/toybirds" --n-samples "$n_eval" --json > "$dir/eval_rprecision.json"
t2i eval --metric attr --model "$dir/attngan" --data "$dir/toybirds" --n-samples "$n_eval" --attr-steps "$attr_steps" \
  --json > "$dir/eval_attr.json"
t2i eval --metric fid --fid-backbone data --model "$dir/attngan" --data "$dir/toybirds" --n-samples "$n_eval" \
  --fid-steps "$attr_steps" --json > "$dir/eval_fid.json"

secs=$(( $(date +%s) - start ))
"$PY" - "$dir" "$secs" <<'PYEOF'
import json, sys
d, secs = sys.argv[1], int(sys.argv[2])
rp = json.load(open(f"{d}/eval_rprecision.json"))
at = json.load(open(f"{d}/eval_attr.json"))
fid = json.load(open(f"{d}/eval_fid.json"))
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
