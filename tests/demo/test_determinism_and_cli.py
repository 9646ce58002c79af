"""Same seed, same bytes; the ``python -m bids_vem.demo`` entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bids_vem.demo import make_demo_dataset
from bids_vem.demo.__main__ import main
from bids_vem.errors import OutputError, UsageError

from .conftest import SMALL


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_seed_gives_the_same_bytes_in_every_file(small_demo, tmp_path):
    again = make_demo_dataset(tmp_path / "again", seed=3, **SMALL)
    first, second = _files(small_demo.root), _files(again.root)
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []
    assert any(name.endswith("_desc-preproc_bold.nii.gz") for name in first)
    assert any(name.endswith(".png") for name in first)


def test_another_seed_gives_other_images_and_bold(small_demo, tmp_path):
    other = make_demo_dataset(tmp_path / "other", seed=4, **SMALL)
    first, second = _files(small_demo.root), _files(other.root)
    image = "ds/stimuli/images/stim0001.png"
    bold = "ds/sub-01/func/sub-01_task-shapes_run-1_bold.nii.gz"
    assert first[image] != second[image] and first[bold] != second[bold]


def test_adding_subjects_leaves_the_first_ones_unchanged(small_demo, tmp_path):
    larger = make_demo_dataset(tmp_path / "larger", seed=3, **{**SMALL, "n_subjects": 2})
    first, second = _files(small_demo.root), _files(larger.root)
    for name in first:
        if name.startswith(("ds/sub-01/", "ds/derivatives/bids_vem_demo-fmriprep/sub-01/")):
            assert first[name] == second[name], name
    assert "ds/sub-02/func/sub-02_task-shapes_run-2_events.tsv" in second


def test_small_demo_has_what_was_asked(small_demo):
    assert small_demo.subjects == ("01",) and small_demo.runs == ("1", "2")
    images = list((small_demo.bids_dir / "stimuli" / "images").glob("*.png"))
    assert len(images) == 24
    truth = np.load(small_demo.ground_truth_dir / "sub-01_truth.npz")
    assert {"run-1_noise_free", "run-2_noise_free"} <= set(truth.files)
    assert "run-3_noise_free" not in truth.files


def test_a_previous_demo_is_not_overwritten_unless_asked(small_demo):
    with pytest.raises(OutputError, match="already holds ds"):
        make_demo_dataset(small_demo.root, seed=3, **SMALL)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_subjects": 0}, "n_subjects"),
        ({"n_runs": 1.5}, "n_runs"),
        ({"n_stimuli": 1}, "n_stimuli"),
    ],
)
def test_bad_counts_are_usage_errors(tmp_path, kwargs, message):
    with pytest.raises(UsageError, match=message) as info:
        make_demo_dataset(tmp_path / "demo", **kwargs)
    assert info.value.exit_code == 64
    assert not (tmp_path / "demo").exists()


def test_cli_writes_the_demo_and_prints_where_and_how(tmp_path, capsys):
    code = main([str(tmp_path / "demo"), "--subjects", "1", "--runs", "1", "--stimuli", "12", "-q"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"BIDS dataset:     {tmp_path / 'demo' / 'ds'}" in out
    assert "bids_vem " in out and "--text-encoder minilm=sentence:" in out
    assert "--image-encoder randomclip=openclip:" in out
    assert (
        tmp_path / "demo" / "ds" / "sub-01" / "func" / "sub-01_task-shapes_run-1_bold.nii.gz"
    ).is_file()
    # a second run on the same folder is refused with the BIDS-App exit code for output errors
    assert main([str(tmp_path / "demo"), "--subjects", "1", "-q"]) == 73
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--subjects", "0"], ["--runs", "x"], []])
def test_cli_usage_errors_exit_64_with_one_line(tmp_path, capsys, argv):
    root = [str(tmp_path / "demo")] if argv else []
    assert main(root + argv) == 64
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_module_entry_point_shows_help():
    result = subprocess.run(
        [sys.executable, "-m", "bids_vem.demo", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0
    assert "--subjects" in result.stdout and "--seed" in result.stdout
