"""descriptors/brainlife/main: config.json in, bids_vem's outputs and product.json out."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.containers.conftest import PYTHON, REPO, demo_options

MAIN = REPO / "descriptors" / "brainlife" / "main"


def run_main(task: Path, config: dict, path: str) -> subprocess.CompletedProcess:
    """Run ``main`` as brainlife does: executable, in the task folder, with a python3 on PATH."""
    (task / "config.json").write_text(json.dumps(config))
    shim = task.parent / "python-shim"
    if not shim.is_dir():
        shim.mkdir()
        (shim / "python3").symlink_to(PYTHON)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["PATH"] = f"{path}:{shim}"
    return subprocess.run(
        [str(MAIN)], cwd=task, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_example_config_has_the_keys_main_reads():
    config = json.loads((REPO / "descriptors" / "brainlife" / "config.json").read_text())
    for key in ("bids", "participant_label", "captions", "text_encoder", "image_encoder"):
        assert key in config


@pytest.mark.slow
def test_main_runs_the_demo_and_lays_out_the_outputs(tiny_demo, tmp_path):
    task = tmp_path / "task"
    task.mkdir()
    options = demo_options(tiny_demo, text=False)
    config = {
        "bids": os.path.relpath(tiny_demo.bids_dir, task),  # brainlife gives relative paths
        "participant_label": "",
        "_inputs": [{"id": "bids", "meta": {"subject": "01"}}],
        "captions": "stimuli/captions.tsv",
        "image_encoder": options[options.index("--image-encoder") + 1],
        "confounds": "trans_x trans_y",
        "nprocs": 2,
        "skip_bids_validation": True,
        "extra_args": "--alphas 1 1e2 1e4 1e6",
    }
    done = run_main(task, config, f"{PYTHON.parent}:/usr/bin:/bin")
    assert done.returncode == 0, done.stderr[-3000:]
    command = done.stdout.splitlines()[0]
    assert "--participant-label 01" in command
    assert f"--captions {tiny_demo.bids_dir / 'stimuli' / 'captions.tsv'}" in command
    output = task / "output"
    assert len(list((output / "sub-01" / "func").glob("*_stat-r_statmap.nii.gz"))) == 1
    assert (output / "sub-01.html").is_file()
    product = json.loads((task / "product.json").read_text())
    assert product["exit_code"] == 0
    assert product["brainlife"][0]["type"] == "info"
    assert product["summary"] and product["summary"][0]
    assert not (task / "work").exists()  # removed after success


def test_a_config_without_a_dataset_fails_with_exit_64_and_a_message(tmp_path):
    done = run_main(tmp_path, {"bids": "missing", "participant_label": "01"}, "/usr/bin:/bin")
    assert done.returncode == 64
    product = json.loads((tmp_path / "product.json").read_text())
    assert product["brainlife"][0]["type"] == "error"
    assert "dataset_description.json" in product["brainlife"][0]["msg"]


def test_without_bids_vem_installed_main_runs_the_image_with_apptainer(tiny_demo, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "args.txt"
    fake = bin_dir / "apptainer"
    fake.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\necho "bids_vem: error: x" >&2\nexit 66\n'
    )
    fake.chmod(0o755)
    task = tmp_path / "task"
    task.mkdir()
    config = {
        "bids": str(tiny_demo.bids_dir),
        "participant_label": "sub-01",
        "text_encoder": "sentence:all-MiniLM-L6-v2",
    }
    assert shutil.which("bids_vem", path=f"{bin_dir}:/usr/bin:/bin") is None
    done = run_main(task, config, f"{bin_dir}:/usr/bin:/bin")
    assert done.returncode == 66
    args = record.read_text().splitlines()
    assert args[:3] == ["run", "--cleanenv", "--nv"]
    assert str(tiny_demo.bids_dir) in args and str(task) in args
    image = args.index("docker://bidsvem/bids_vem:0.1.0")
    assert args[image + 1 : image + 4] == [
        str(tiny_demo.bids_dir),
        str(task / "output"),
        "participant",
    ]
    product = json.loads((task / "product.json").read_text())
    assert product["brainlife"][0] == {
        "type": "error",
        "msg": "bids_vem failed (exit 66): bids_vem: error: x",
    }
