#!/usr/bin/env bash
# One participant per SLURM array task, with the Apptainer image of bids_vem.
#
#   sbatch --array=1-$(tail -n +2 /data/ds/participants.tsv | wc -l) examples/slurm_array.sh
#
# Settings (environment variables, or edit the defaults below):
#   BIDS_DIR  the BIDS dataset             OUTPUT_DIR  the derivatives folder
#   WORK_DIR  scratch space (one sub-folder per participant)
#   SIF       the image (apptainer build bids_vem.sif Singularity.def)
#   BIDS_VEM  instead of an image: the bids_vem command installed on the nodes
#             (e.g. /shared/venvs/bids_vem/bin/bids_vem); SIF is then not used
#   SHARED_WORK=1  one work folder for every task (WORK_DIR itself): features are computed
#             once for all participants; by default each task gets WORK_DIR/sub-XX
#   MODELS    a folder of model weights bound at /models (optional)
#   BIDS_VEM_ARGS  the analysis options, e.g. "--text-encoder sentence:all-MiniLM-L6-v2"
# After every task has finished, run the group level once:
#   apptainer run --cleanenv -B "$BIDS_DIR":/data:ro -B "$OUTPUT_DIR":/out -B "$WORK_DIR":/work \
#       "$SIF" /data /out group -w /work/group
#SBATCH --job-name=bids_vem
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=04:00:00
#SBATCH --gres=gpu:1
#SBATCH --output=bids_vem_%A_%a.log
set -euo pipefail

BIDS_DIR=${BIDS_DIR:-/data/ds}
OUTPUT_DIR=${OUTPUT_DIR:-$BIDS_DIR/derivatives/bids_vem}
WORK_DIR=${WORK_DIR:-${SCRATCH:-/scratch/$USER}/bids_vem_work}
SIF=${SIF:-$HOME/images/bids_vem-0.1.0.sif}
MODELS=${MODELS:-}
BIDS_VEM_ARGS=${BIDS_VEM_ARGS:-}
task_id=${SLURM_ARRAY_TASK_ID:?submit with sbatch --array=1-N}

# the task's participant: row N of participants.tsv (after the header)
subject=$(awk -F'\t' -v n="$task_id" 'NR == n + 1 { sub(/^sub-/, "", $1); print $1 }' \
    "$BIDS_DIR/participants.tsv")
if [ -z "$subject" ]; then
    echo "slurm_array.sh: no participant number $task_id in $BIDS_DIR/participants.tsv" >&2
    exit 64
fi

# one work folder per participant, or one shared by all tasks (per-selection workflow
# folders keep the tasks apart, and the feature cache is shared)
work=$WORK_DIR/sub-$subject
if [ "${SHARED_WORK:-0}" = 1 ]; then
    work=$WORK_DIR
fi
mkdir -p "$OUTPUT_DIR" "$work"
nprocs=${SLURM_CPUS_PER_TASK:-1}
mem=${SLURM_MEM_PER_NODE:-32000}MB

if [ -n "${BIDS_VEM:-}" ]; then
    # shellcheck disable=SC2086  # BIDS_VEM_ARGS is a list of options
    exec "$BIDS_VEM" "$BIDS_DIR" "$OUTPUT_DIR" participant --participant-label "$subject" \
        -w "$work" --nprocs "$nprocs" --mem "$mem" \
        ${MODELS:+--model-dir "$MODELS"} $BIDS_VEM_ARGS
fi

binds=(-B "$BIDS_DIR":/data:ro -B "$OUTPUT_DIR":/out -B "$work":/work)
model_args=()
if [ -n "$MODELS" ]; then
    binds+=(-B "$MODELS":/models:ro)
    model_args=(--model-dir /models)
fi
# shellcheck disable=SC2086  # BIDS_VEM_ARGS is a list of options
exec apptainer run --cleanenv --nv "${binds[@]}" "$SIF" \
    /data /out participant --participant-label "$subject" -w /work \
    --nprocs "$nprocs" --mem "$mem" \
    "${model_args[@]}" $BIDS_VEM_ARGS
