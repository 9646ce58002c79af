#!/usr/bin/env bash
# Set up, generate the demo dataset (simulated BOLD with ground truth), and run bids_vem on it,
# participant then group level, offline. Usage: scripts/demo.sh [DEMO_DIR]  (default: demo_run)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test,demo
demo=${1:-demo_run}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
start=$(date +%s)
.venv/bin/python -m bids_vem.demo "$demo" --subjects 4 --runs 4 --overwrite
# --align: the tiny random image tower learns at a higher rate than a pretrained CLIP (1e-5)
.venv/bin/bids_vem "$demo/ds" "$demo/ds/derivatives/bids_vem" participant \
    -w "$demo/work" --nprocs 2 \
    --captions "$demo/ds/stimuli/captions.tsv" \
    --confounds trans_x trans_y trans_z rot_x rot_y rot_z csf white_matter \
    --text-encoder minilm=sentence:all-MiniLM-L6-v2 \
    --image-encoder randomclip=openclip:"$demo/models/randomclip-vit-tiny" \
    --align --align-epochs 5 --align-lr 1e-3 --align-batch-size 32 --align-unfreeze-blocks -1
.venv/bin/bids_vem "$demo/ds" "$demo/ds/derivatives/bids_vem" group -w "$demo/work"
echo "bids_vem demo finished in $(( $(date +%s) - start )) s"
echo "participant report: $demo/ds/derivatives/bids_vem/sub-01.html"
echo "group report:       $demo/ds/derivatives/bids_vem/group/group.html"
echo "ground truth:       $demo/ground_truth"
