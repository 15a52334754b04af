#!/usr/bin/env bash
# The street-world fine-tuning recipe of docs/proxies-and-finetune.md over seeds, in one command:
# the seed-0 world (made if missing), the three proxy sets (id/train and the pool kinds only; made
# once, reused), then `ghostbox finetune --seeds` with the recipe's settings and any extra flags.
#
#   tools/finetune_street.sh OUT [SEEDS] [finetune flags...]
#   tools/finetune_street.sh runs/ft-rounds 0,1,2 --rounds 2 --mine-conf 0.1
#   tools/finetune_street.sh runs/ft-unknown 0,1,2 --unknown-class
#
# OUT/seeds.md holds the mean and spread over the seeds; OUT/seed-K/ each run. About 12 min a
# seed and round on 2 CPU cores. Run from the checkout, after `bash tools/setup.sh`.
set -euo pipefail
if [ $# -lt 1 ]; then
    sed -n 2,11p "$0"
    exit 2
fi
OUT=$1
SEEDS=${2:-0,1,2}
shift $(( $# >= 2 ? 2 : 1 ))
G=${GHOSTBOX:-.venv/bin/ghostbox}
W=${GHOSTBOX_WORLD:-.ghostbox/worlds/seed0}
P=${GHOSTBOX_PROXIES:-runs/street-proxies}
ID="$W/id/train:classes=pedestrian,car,traffic light,traffic sign"
TRANSFORMS=patch_shuffle,cross_class_blend,texture_swap

[ -f "$W/world.json" ] || "$G" synth --seed 0 --out "$W"
[ -f "$P/mixed/manifest.json" ] || "$G" proxies --id "$W/id/train" --pool "$W/ood/pool" \
    --model pipeline/assets/models/ghostbox-street-n.pt --strategies background,paste,transform,mined \
    --count 500 --seed 0 --transforms "$TRANSFORMS" --out "$P/mixed" --overwrite
[ -f "$P/transform/manifest.json" ] || "$G" proxies --id "$ID" --pool "$W/ood/pool" --strategies transform \
    --count 1000 --max-pastes 8 --seed 1 --transforms "$TRANSFORMS" --out "$P/transform" --overwrite
[ -f "$P/interior/manifest.json" ] || "$G" proxies --id "$ID" --pool "$W/ood/pool" --strategies transform \
    --count 1000 --max-pastes 8 --seed 2 --transforms interior_swap --out "$P/interior" --overwrite

exec "$G" finetune --id "$W/id/train" --val "$W/id/val" --ood "$W/ood/near_test" --ood "$W/ood/far_test" \
    --proxies "$P/mixed" "$P/transform" "$P/interior" --proxy-ratio 1.5 --epochs 6 --lr0 0.003 \
    --filter-method oe --outliers "$W/ood/pool" --outlier-conf 0.1 --seeds "$SEEDS" --out "$OUT" "$@"
