"""GLMsingle's session folders and NSD's betas_sessionNN: safe reading, discovery, trial order."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy.io import savemat

from bids_vem.errors import DataError, InputMissingError
from bids_vem.inputs.glmsingle import (
    DesignInfo,
    check_trial_order,
    find_session_betas,
    load_pickled_npy,
    read_betas_array,
    read_design_info,
    session_betas_tables,
    session_trials,
)
from bids_vem.inputs.runs import Run


class _Trap:
    """Unpickling it would create ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _run(tmp_path: Path, session: str | None, run: str, rows: list[tuple], task="x") -> Run:
    ses = f"_ses-{session}" if session else ""
    events = tmp_path / "raw" / f"sub-01{ses}_task-{task}_run-{run}_events.tsv"
    events.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["onset", "duration", "stim_file"]).to_csv(
        events, sep="\t", index=False, na_rep="n/a"
    )
    return Run(
        "01", session, task, run, None, "MNI152NLin2009cAsym", tmp_path / "bold.nii.gz", None,
        events, None, 2.0, 100,
    )  # fmt: skip


def test_pickled_results_load_as_numpy_without_running_code(tmp_path):
    marker = tmp_path / "executed"
    betas = np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2)
    path = tmp_path / "TYPED_FITHRF_GLMDENOISE_RR.npy"
    results = {"betasmd": betas, "FRACvalue": np.float32(0.5), "trap": _Trap(marker), "n": [1, 2]}
    np.save(path, results, allow_pickle=True)
    loaded = load_pickled_npy(path)
    np.testing.assert_array_equal(loaded["betasmd"], betas)
    assert loaded["FRACvalue"] == np.float32(0.5) and loaded["n"] == [1, 2]
    assert not marker.exists()
    # the reference: NumPy's own loader does run it
    np.load(path, allow_pickle=True).item()
    assert marker.exists()


def test_files_written_by_numpy_1_are_read(tmp_path):
    """NumPy < 2 names numpy.core in its pickles, NumPy 2 numpy._core."""
    design = np.empty((), dtype=object)
    design[()] = {"stimorder": np.array([0, 1, 0]), "numtrialrun": np.array([3])}
    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(stream, np.lib.format.header_data_from_array_1_0(design))
    # protocol 2 names classes in text lines, as old NumPy files do
    stream.write(pickle.dumps(design, protocol=2).replace(b"numpy._core", b"numpy.core"))
    path = tmp_path / "DESIGNINFO.npy"
    path.write_bytes(stream.getvalue())
    assert b"numpy.core.multiarray" in path.read_bytes()
    info = read_design_info(tmp_path)
    assert info.stimorder.tolist() == [0, 1, 0] and info.numtrialrun.tolist() == [3]


def test_plain_arrays_are_memory_mapped(tmp_path):
    path = tmp_path / "TYPED_FITHRF_GLMDENOISE_RR.npy"
    np.save(path, np.ones((2, 2, 2, 3), dtype=np.float32))
    array = read_betas_array(path)
    assert isinstance(array, np.memmap) and array.shape == (2, 2, 2, 3)


def test_matlab_results_and_the_v73_refusal(tmp_path):
    path = tmp_path / "TYPED_FITHRF_GLMDENOISE_RR.mat"
    savemat(path, {"modelmd": np.ones((2, 2, 2, 3)), "R2": np.zeros((2, 2, 2))})
    assert read_betas_array(path).shape == (2, 2, 2, 3)
    # a MATLAB v7.3 header (HDF5 inside): scipy cannot read it, and says so in one line
    header = b"MATLAB 7.3 MAT-file".ljust(116) + b"\0" * 8 + b"\x00\x02IM"
    path.write_bytes(header + b"\0" * 512)
    with pytest.raises(DataError, match="MATLAB v7.3"):
        read_betas_array(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"betasmd": np.ones((50, 1, 1, 4))}, "are not X x Y x Z x trials"),
        ({"R2": np.ones((2, 2, 2))}, "no single-trial betas"),
        ({"betasmd": np.array(["a", "b"])}, "not a numeric array"),
    ],
)
def test_betas_that_are_not_volumes_are_refused(tmp_path, content, message):
    path = tmp_path / "TYPED_FITHRF_GLMDENOISE_RR.npy"
    np.save(path, content, allow_pickle=True)
    with pytest.raises(DataError, match=message):
        read_betas_array(path)


def test_a_truncated_pickle_is_unreadable(tmp_path):
    path = tmp_path / "TYPED_FITHRF_GLMDENOISE_RR.npy"
    np.save(path, {"betasmd": np.ones((2, 2, 2, 3))}, allow_pickle=True)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputMissingError, match="cannot read this .npy file"):
        load_pickled_npy(path)


def test_trials_are_runs_in_number_order_and_events_by_onset(tmp_path):
    runs = [
        _run(tmp_path, "1", "10", [(0, 1, "c.png")]),
        _run(tmp_path, "1", "2", [(8, 1, "b.png"), (2, 1, "n/a"), (4, 1, "a.png")]),
    ]
    trials, per_run = session_trials(runs, "stim_file")
    assert trials["stim_file"].tolist() == ["a.png", "b.png", "c.png"]
    assert trials["run"].tolist() == ["2", "2", "10"] and per_run == [2, 1]


def test_designinfo_catches_another_trial_order(tmp_path):
    trials = pd.DataFrame({"stim_file": ["a", "b", "a", "c"]})
    betas = tmp_path / "TYPED_FITHRF_GLMDENOISE_RR.npy"
    design = DesignInfo(np.array([0, 1, 0, 2]), np.array([2, 2]), tmp_path / "DESIGNINFO.npy")
    check_trial_order(trials, [2, 2], design, betas)
    with pytest.raises(DataError, match=r"trials per run \(2, 2\) differ .* \(3, 1\)"):
        check_trial_order(trials, [3, 1], design, betas)
    # the runs given to GLMsingle in the other order: condition 1 is b in one place, c in another
    swapped = pd.DataFrame({"stim_file": ["a", "c", "a", "b"]})
    with pytest.raises(DataError, match="condition 1 is b, c by the events.*RR.tsv beside"):
        check_trial_order(
            swapped, [2, 2], design.__class__([0, 1, 0, 1], [2, 2], design.source), betas
        )


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_bold_moments_layout_picks_the_space_and_the_final_model(tmp_path):
    """BOLD Moments: GLM folders per space (MNI152, fsaverage) and per session; GLMsingle's
    type D wins over type B."""
    root = tmp_path / "versionB"
    for space in ("MNI152", "fsaverage"):
        for ses in ("01", "02"):
            folder = root / space / "GLM" / "sub-01" / f"ses-{ses}"
            _touch(folder / "TYPED_FITHRF_GLMDENOISE_RR.npy")
            _touch(folder / "TYPEB_FITHRF.npy")
    _touch(root / "MNI152" / "GLM" / "sub-02" / "ses-01" / "TYPED_FITHRF_GLMDENOISE_RR.npy")
    runs = [_run(tmp_path, "01", "1", []), _run(tmp_path, "02", "1", [])]
    found = find_session_betas(root, runs, "MNI152NLin2009cAsym")
    assert {s: p.relative_to(root).as_posix() for s, p in found.items()} == {
        "01": "MNI152/GLM/sub-01/ses-01/TYPED_FITHRF_GLMDENOISE_RR.npy",
        "02": "MNI152/GLM/sub-01/ses-02/TYPED_FITHRF_GLMDENOISE_RR.npy",
    }
    with pytest.raises(InputMissingError, match="sub-01 ses-01 has MNI152/GLM"):
        find_session_betas(root, runs, "T1w")  # two spaces, neither named T1w
    runs.append(_run(tmp_path, "03", "1", []))
    with pytest.raises(InputMissingError, match="no session betas for sub-01 ses-03"):
        find_session_betas(root, runs, "MNI152NLin2009cAsym")


def test_nsd_session_images_match_sessions_by_number(tmp_path):
    """NSD: nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR/
    betas_session01.nii.gz is session nsd01 of a BIDS conversion; its volumes are the
    session's trials in order, checked against the events' count."""
    folder = tmp_path / "ppdata" / "subj01" / "func1pt8mm" / "betas_fithrf_GLMdenoise_RR"
    folder.mkdir(parents=True)
    nib.save(
        nib.Nifti1Image(np.zeros((2, 2, 2, 5), np.float32), np.eye(4)), tmp_path / "bold.nii.gz"
    )
    for ses, n in ((1, 3), (2, 2)):
        volumes = np.zeros((2, 2, 2, n), dtype=np.int16)
        nib.save(nib.Nifti1Image(volumes, np.eye(4)), folder / f"betas_session{ses:02d}.nii.gz")
    runs = [
        _run(tmp_path, "nsd01", "1", [(0, 3, "a.png"), (4, 3, "b.png")]),
        _run(tmp_path, "nsd01", "2", [(0, 3, "a.png"), (4, 3, "n/a")]),
        _run(tmp_path, "nsd02", "1", [(0, 3, "c.png"), (4, 3, "d.png")]),
    ]
    pairs = session_betas_tables(tmp_path / "ppdata", runs, "stim_file", tmp_path / "work")
    assert [image.name for image, _ in pairs] == [
        "betas_session01.nii.gz",
        "betas_session02.nii.gz",
    ]
    table = pd.read_csv(pairs[0][1], sep="\t", dtype=str)
    assert table["stim_file"].tolist() == ["a.png", "b.png", "a.png"]
    assert table["session"].tolist() == ["nsd01"] * 3 and table["run"].tolist() == ["1", "1", "2"]
    # a table beside the image wins
    beside = folder / "betas_session02.tsv"
    beside.write_text("stim_file\nd.png\nc.png\n")
    assert (
        session_betas_tables(tmp_path / "ppdata", runs, "stim_file", tmp_path / "w")[1][1] == beside
    )
    # the BOLD on another grid: refused before any work
    nib.save(
        nib.Nifti1Image(np.zeros((2, 2, 2, 5)), np.diag([2, 2, 2, 1])), tmp_path / "bold.nii.gz"
    )
    with pytest.raises(DataError, match=r"betas grid \(2, 2, 2\) is not that of the MNI152"):
        session_betas_tables(tmp_path / "ppdata", runs, "stim_file", tmp_path / "work")
    # one trial too many in the events: the count is checked before any work
    runs.append(_run(tmp_path, "nsd01", "3", [(0, 3, "e.png")]))
    with pytest.raises(DataError, match="3 volumes but the events of its session name 4"):
        session_betas_tables(tmp_path / "ppdata", runs, "stim_file", tmp_path / "work")


def test_the_unpickler_refuses_nothing_it_can_stand_in_for(tmp_path):
    """Objects of other libraries (pandas frames in DESIGNINFO's params) become placeholders;
    the arrays beside them are intact."""
    path = tmp_path / "DESIGNINFO.npy"
    frame = pd.DataFrame({"a": [1, 2]})
    np.save(
        path,
        {"stimorder": np.array([1, 0]), "numtrialrun": np.array([2]), "params": {"f": frame}},
        allow_pickle=True,
    )
    loaded = load_pickled_npy(path)
    assert not isinstance(loaded["params"]["f"], pd.DataFrame)
    assert loaded["stimorder"].tolist() == [1, 0]
    assert pickle.dumps(0)  # pickle itself untouched
