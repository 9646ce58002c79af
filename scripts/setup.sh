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
# Debian packages some tests use: chromium (the report tests open the reports in a real headless
# browser) and slurm-wlm + munge (a one-node SLURM cluster: scripts/slurm_cluster.sh)
if [[ ",$extras," == *",test,"* ]]; then
    packages=()
    command -v chromium >/dev/null 2>&1 || packages+=(chromium)
    command -v slurmctld >/dev/null 2>&1 || packages+=(slurm-wlm)
    command -v munged >/dev/null 2>&1 || packages+=(munge)
    if [ "${#packages[@]}" -gt 0 ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "bids_vem setup: installing Debian's ${packages[*]} for the browser and SLURM tests (a few minutes)"
            if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}"; } >/dev/null 2>&1; then
                echo "bids_vem setup: ${packages[*]} could not be installed; the tests that need them will skip"
            fi
        else
            echo "bids_vem setup: no ${packages[*]} (install them from Debian as root); the tests that need them will skip"
        fi
    fi
fi
.venv/bin/bids_vem --version
