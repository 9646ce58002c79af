#!/usr/bin/env bash
# Set up and run the whole test suite (unit, fixture and end-to-end tests; no GPU needed).
# Extra arguments go to pytest, e.g. scripts/test.sh -k ridge
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test,demo
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/ruff check bids_vem tests benchmarks
.venv/bin/ruff format --check bids_vem tests benchmarks
exec .venv/bin/python -m pytest "$@"
