#!/usr/bin/env bash
# Create .venv in the repository and install bids_vem with the extras named in $1
# (default "test,demo"). Idempotent: a second call only checks the install.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-test,demo}"
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "bids_vem setup: creating .venv with $($python --version)"
    "$python" -m venv .venv
fi
stamp=".venv/.bids_vem-installed-$(cat pyproject.toml | sha256sum | cut -c1-16)-${extras//,/-}"
if [ ! -f "$stamp" ]; then
    echo "bids_vem setup: installing bids_vem[$extras] and its dependencies (PyTorch included: the first time takes minutes)"
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[$extras]"
    touch "$stamp"
fi
.venv/bin/bids_vem --version
