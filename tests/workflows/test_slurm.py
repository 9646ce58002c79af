"""The participant level on a real one-node SLURM cluster (munged, slurmctld, slurmd on this
machine, started by scripts/slurm_cluster.sh): through nipype's SLURM plugin (one batch job per
step) and through examples/slurm_array.sh (one participant per array task, into one OUTPUT_DIR
and one work directory). Both must give the files of a local run, byte for byte.

Skipped, saying why, where the cluster cannot start: no slurm-wlm or munge (scripts/setup.sh
installs them as root), or not root (slurmd must be)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.containers.conftest import REPO
from tests.helpers import derivative_differences

pytestmark = pytest.mark.slow

N_SUBJECTS = 2


def _free_port_pair() -> int:
    """A port p with p and p + 1 free (slurmctld, slurmd): runs side by side never collide."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port > 60000:
            continue
        with socket.socket() as second:
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    pytest.skip("no two free neighbouring ports for slurmctld and slurmd")


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A one-node cluster of this machine's CPUs; yields the environment its commands need."""
    missing = [
        tool for tool in ("munged", "slurmctld", "slurmd", "sbatch") if not shutil.which(tool)
    ]
    if missing:
        pytest.skip(
            f"no SLURM here ({', '.join(missing)} missing: apt-get install slurm-wlm munge)"
        )
    if os.geteuid() != 0:
        pytest.skip("slurmd must run as root to start a one-node cluster")
    folder = tmp_path_factory.mktemp("slurm")
    script = REPO / "scripts" / "slurm_cluster.sh"
    env = os.environ | {"SLURM_PORT": str(_free_port_pair())}
    started = subprocess.run(
        ["bash", str(script), "start", str(folder)], env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    if started.returncode != 0:
        pytest.skip(f"the SLURM cluster did not start: {started.stderr.strip()[-500:]}")
    try:
        yield env | {"SLURM_CONF": str(folder / "slurm.conf")}
    finally:
        subprocess.run(["bash", str(script), "stop", str(folder)], timeout=60)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from bids_vem.demo import make_demo_dataset

    root = tmp_path_factory.mktemp("slurm_demo")
    return make_demo_dataset(root / "demo", n_subjects=N_SUBJECTS, n_runs=3, n_stimuli=24)


def _options(demo) -> list[str]:
    return [
        "--skip-bids-validation", "--permutations", "0", "--alphas", "1", "100", "10000",
        "--captions", str(demo.captions_tsv),
        "--text-encoder", "minilm=sentence:all-MiniLM-L6-v2",
    ]  # fmt: skip


def _bids_vem(demo, out: Path, work: Path, *extra: str, env: dict) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bids_vem", str(demo.bids_dir), str(out), "participant",
         "-w", str(work), *_options(demo), *extra],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def local_run(dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("local")
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    _bids_vem(dataset, root / "out", root / "work", "--nprocs", "2", env=env)
    return root / "out"


def test_nipype_slurm_plugin_gives_the_local_outputs(slurm_cluster, dataset, local_run, tmp_path):
    plugin = tmp_path / "slurm.yml"
    plugin.write_text(
        "plugin: SLURM\nplugin_args:\n  sbatch_args: --cpus-per-task=1 --time=30\n"
        "  poll_sleep_duration: 1\n"
    )
    # LOGNAME unset, as in containers started with --cleanenv: nipype names jobs after it
    env = {k: v for k, v in slurm_cluster.items() if k != "LOGNAME"} | {"HF_HUB_OFFLINE": "1"}
    out, work = tmp_path / "out", tmp_path / "work"
    _bids_vem(dataset, out, work, "--use-plugin", str(plugin), env=env)
    # the steps really ran as SLURM jobs
    scripts = [p.name for p in (work / "bids_vem_wf" / "batch").glob("batchscript_*.sh")]
    assert sum("_encode_sub" in name for name in scripts) == N_SUBJECTS, scripts
    assert not [name for name in scripts if "_merge" in name]  # merges run in the submitter
    assert derivative_differences(local_run, out) == []


def test_the_array_job_example_gives_the_local_outputs(slurm_cluster, dataset, local_run, tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    env = slurm_cluster | {
        "HF_HUB_OFFLINE": "1",
        "BIDS_DIR": str(dataset.bids_dir),
        "OUTPUT_DIR": str(out),
        "WORK_DIR": str(work),
        "SHARED_WORK": "1",  # every task in one work directory
        "BIDS_VEM": str(Path(sys.executable).parent / "bids_vem"),
        "BIDS_VEM_ARGS": " ".join(_options(dataset)),
    }
    # the example asks for 8 CPUs, 32 GB and a GPU: command-line options override them
    done = subprocess.run(
        ["sbatch", "--wait", "--parsable", f"--array=1-{N_SUBJECTS}", "--cpus-per-task=1",
         "--mem=2G", "--gres=none", "--time=30", "-o", str(tmp_path / "task_%a.log"),
         str(REPO / "examples" / "slurm_array.sh")],
        env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )  # fmt: skip
    logs = {p.name: p.read_text()[-1500:] for p in sorted(tmp_path.glob("task_*.log"))}
    assert done.returncode == 0, (done.stderr, logs)
    assert sorted(logs) == [f"task_{i}.log" for i in range(1, N_SUBJECTS + 1)]
    for log in logs.values():
        assert "participant level done" in log
    # one workflow folder per task in the shared work directory
    folders = sorted(p.name for p in work.glob("bids_vem_sub*_wf"))
    assert folders == [f"bids_vem_sub{i:02d}_wf" for i in range(1, N_SUBJECTS + 1)]
    # the same files as one local run of all participants, CITATION.md (both) included
    assert derivative_differences(local_run, out) == []
    assert (
        f"{N_SUBJECTS} participants, {3 * N_SUBJECTS} BOLD runs"
        in (out / "logs" / "CITATION.md").read_text()
    )
