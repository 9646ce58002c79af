"""collect_runs and friends on small BIDS trees and on the shared fixtures."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from bids_vem.errors import DataError, InputMissingError, NoMatchError, UsageError
from bids_vem.inputs.layout import (
    collect_runs_report,
    find_derivatives,
    find_preproc_bold,
    list_participants,
    parse_space,
    read_bold_header,
)
from tests.helpers import collect_runs


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_collects_runs_with_sessions(bids_factory, tools):
    R = tools.RunSpec
    root = bids_factory(
        [
            R("01", session="1", run="1"),
            R("01", session="1", run="2", n_volumes=9, has_confounds=False),
            R("02", session="2", run="10"),
            R("02", session="2", run="2"),
        ]
    )
    before = _tree(root)
    runs = collect_runs(root)
    assert [r.name for r in runs] == [
        "sub-01_ses-1_task-scenes_run-1",
        "sub-01_ses-1_task-scenes_run-2",
        "sub-02_ses-2_task-scenes_run-2",
        "sub-02_ses-2_task-scenes_run-10",
    ]
    first, second = runs[:2]
    assert first.subject == "01" and first.session == "1" and first.task == "scenes"
    assert first.run == "1" and first.acquisition is None and first.space == "MNI152NLin2009cAsym"
    assert (
        first.bold.name
        == "sub-01_ses-1_task-scenes_run-1_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
    )
    assert (
        first.mask.name
        == "sub-01_ses-1_task-scenes_run-1_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz"
    )
    assert first.events == root / "sub-01/ses-1/func/sub-01_ses-1_task-scenes_run-1_events.tsv"
    assert first.confounds.name == "sub-01_ses-1_task-scenes_run-1_desc-confounds_timeseries.tsv"
    assert (first.tr, first.n_volumes) == (2.0, 12)
    assert second.confounds is None and second.n_volumes == 9
    assert _tree(root) == before  # nothing written into BIDS_DIR


def test_participant_session_task_filters(bids_factory, tools):
    R = tools.RunSpec
    root = bids_factory(
        [
            R("01", session="a"),
            R("01", session="b"),
            R("02", session="a"),
            R("02", task="movie", session="a"),
        ]
    )
    names = [
        r.name
        for r in collect_runs(
            root, participant_label=["sub-02"], session_label=["a"], task=["movie"]
        )
    ]
    assert names == ["sub-02_ses-a_task-movie_run-1"]
    names = [r.name for r in collect_runs(root, session_label=["b"])]
    assert names == ["sub-01_ses-b_task-scenes_run-1"]


def test_runs_without_session(bids_factory, tools):
    runs = collect_runs(bids_factory([tools.RunSpec("01", run=None)]))
    assert runs[0].session is None and runs[0].run is None
    assert runs[0].name == "sub-01_task-scenes"


def test_tr_fallbacks(bids_factory, tools):
    R = tools.RunSpec
    # no derivative JSON: raw metadata (task-scenes_bold.json, RepetitionTime 2.0) wins over header 1.5
    root = bids_factory([R("01", preproc_tr=None)], raw_tr=2.0)
    assert collect_runs(root)[0].tr == 2.0
    # no JSON anywhere: the NIfTI header (pixdim[4] = 1.5 s)
    root = bids_factory([R("01", preproc_tr=None)], raw_tr=None)
    assert collect_runs(root)[0].tr == 1.5
    # the derivative JSON comes first
    root = bids_factory([R("01", preproc_tr=0.8)], raw_tr=2.0)
    assert collect_runs(root)[0].tr == 0.8


def test_skipped_runs_are_named(bids_factory, tools, caplog):
    R = tools.RunSpec
    root = bids_factory(
        [
            R("01", run="1"),
            R("01", run="2", has_events=False),
            R("01", run="3", has_preproc=False),
            R("01", run="4", has_mask=False),
            R("01", run="5", events=[(0, 1, "n/a")]),
        ]
    )
    tools.write_events(
        root / "sub-01/func/sub-01_task-scenes_run-6_events.tsv",
        [(0, 1, "x")],
        ("onset", "duration", "trial_type"),
    )
    tools.write_nifti(
        root
        / "derivatives/fmriprep/sub-01/func/sub-01_task-scenes_run-6_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz",
        4,
    )
    tools.write_nifti(
        root
        / "derivatives/fmriprep/sub-01/func/sub-01_task-scenes_run-6_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz",
        None,
    )
    with caplog.at_level(logging.WARNING, logger="bids_vem.inputs.layout"):
        runs, skipped = collect_runs_report(root)
    # a run without a brain mask is kept: its mask is derived from the BOLD later (NOD)
    assert [r.name for r in runs] == ["sub-01_task-scenes_run-1", "sub-01_task-scenes_run-4"]
    assert runs[0].mask is not None and runs[1].mask is None
    reasons = {s.split(":")[0]: s for s in skipped}
    assert set(reasons) == {f"sub-01_task-scenes_run-{i}" for i in (2, 3, 5, 6)}
    assert "no events.tsv" in reasons["sub-01_task-scenes_run-2"]
    assert (
        "no preprocessed BOLD in space MNI152NLin2009cAsym" in reasons["sub-01_task-scenes_run-3"]
    )
    assert "names no stimulus" in reasons["sub-01_task-scenes_run-5"]
    assert (
        "has no stimulus column 'stim_file' (nor condition" in reasons["sub-01_task-scenes_run-6"]
    )
    for name in reasons:
        assert name in caplog.text


def test_events_found_by_inheritance(bids_factory, tools):
    R = tools.RunSpec
    root = bids_factory([R("01", run="1", has_events=False), R("01", run="2", has_events=False)])
    tools.write_events(root / "task-scenes_events.tsv", [(0, 2, "shared.png")])
    tools.write_events(
        root / "sub-01/func/sub-01_task-scenes_run-2_events.tsv", [(0, 2, "own.png")]
    )
    runs = collect_runs(root)
    assert runs[0].events == root / "task-scenes_events.tsv"
    assert runs[1].events == root / "sub-01/func/sub-01_task-scenes_run-2_events.tsv"


def test_bids_filter_file(bids_factory, tools):
    R = tools.RunSpec
    root = bids_factory([R("01", run="1"), R("01", run="2"), R("01", run="3", session=None)])
    assert [r.run for r in collect_runs(root, bids_filters={"bold": {"run": [1, 3]}})] == ["1", "3"]
    assert [r.run for r in collect_runs(root, bids_filters={"bold": {"run": "2"}})] == ["2"]
    # null: the entity must be absent; none of these runs has an acquisition
    assert len(collect_runs(root, bids_filters={"bold": {"acquisition": None}})) == 3
    with pytest.raises(NoMatchError) as info:
        collect_runs(root, bids_filters={"bold": {"acquisition": "*"}})
    assert info.value.exit_code == 18
    assert "bids_filters_bold" in str(info.value)
    with pytest.raises(UsageError, match="--bids-filter-file"):
        collect_runs(root, bids_filters={"bold": {"flavour": "x"}})
    with pytest.raises(UsageError, match="--bids-filter-file"):
        collect_runs(root, bids_filters={"bold": ["run", 1]})


def test_unknown_participant_lists_existing(bids_factory, tools):
    root = bids_factory([tools.RunSpec("01"), tools.RunSpec("02")])
    with pytest.raises(UsageError) as info:
        collect_runs(root, participant_label=["03", "01"])
    message = str(info.value)
    assert info.value.exit_code == 64
    assert "--participant-label: 03 not found" in message
    assert "participants there: 01, 02" in message
    assert "bind mounts" in message


@pytest.mark.parametrize(
    ("option", "value"),
    [("participant_label", ["0 1"]), ("session_label", ["a_b"]), ("task", ["x-y"])],
)
def test_labels_must_be_alphanumeric(bids_factory, tools, option, value):
    root = bids_factory([tools.RunSpec("01")])
    with pytest.raises(UsageError) as info:
        collect_runs(root, **{option: value})
    assert "not a BIDS label" in str(info.value) and repr(value[0]) in str(info.value)


def test_filters_that_select_nothing(bids_factory, tools):
    root = bids_factory([tools.RunSpec("01", session="1")])
    with pytest.raises(NoMatchError) as info:
        collect_runs(root, session_label=["2"], task=["movie"])
    assert info.value.exit_code == 18
    assert "session_label=['2']" in str(info.value) and "task=['movie']" in str(info.value)


def test_no_derivatives(tmp_path, tools):
    root = tools.make_bids(tmp_path / "ds", [tools.RunSpec("01")])
    shutil.rmtree(root / "derivatives")
    with pytest.raises(InputMissingError) as info:
        collect_runs(root)
    assert info.value.exit_code == 66 and "no derivatives" in str(info.value)
    with pytest.raises(InputMissingError, match="--derivatives .*nowhere: no such folder"):
        collect_runs(root, derivatives=[tmp_path / "nowhere"])


def test_no_bold_in_space_lists_spaces_found(bids_factory, tools):
    root = bids_factory([tools.RunSpec("01")], space="T1w")
    with pytest.raises(InputMissingError) as info:
        collect_runs(root)
    assert info.value.exit_code == 66
    assert "no preprocessed BOLD (desc-preproc_bold) in space MNI152NLin2009cAsym" in str(
        info.value
    )
    assert "spaces found: T1w" in str(info.value)
    assert [r.space for r in collect_runs(root, space="T1w")] == ["T1w"]


def test_resolution_choice(bids_factory, tools):
    R = tools.RunSpec
    root = bids_factory([R("01", space_entities=("res-2",))])
    # a second resolution of the same run
    func = root / "derivatives/fmriprep/sub-01/func"
    for name in ("desc-preproc_bold", "desc-brain_mask"):
        src = func / f"sub-01_task-scenes_run-1_space-MNI152NLin2009cAsym_res-2_{name}.nii.gz"
        shutil.copy(src, func / src.name.replace("res-2", "res-1"))
    with pytest.raises(
        UsageError, match="two preprocessed BOLD files for sub-01_task-scenes_run-1"
    ):
        collect_runs(root)
    run = collect_runs(root, space="MNI152NLin2009cAsym:res-1")[0]
    assert "_res-1_desc-preproc" in run.bold.name and "_res-1_desc-brain" in run.mask.name
    assert parse_space("MNI152NLin6Asym:res-2:cohort-1") == (
        "MNI152NLin6Asym",
        {"res": "2", "cohort": "1"},
    )
    with pytest.raises(UsageError, match="--space"):
        parse_space("MNI:size-2")


def test_empty_and_broken_bold(bids_factory, tools):
    root = bids_factory([tools.RunSpec("01", run="1"), tools.RunSpec("01", run="2")])
    bold = collect_runs(root)[0].bold
    bold.write_bytes(b"")
    with pytest.raises(InputMissingError) as info:
        collect_runs(root)
    assert str(bold) in str(info.value) and "empty file (0 bytes)" in str(info.value)
    assert str(info.value).startswith("1 preprocessed BOLD file(s) cannot be read")
    bold.write_bytes(b"not a nifti at all" * 30)
    with pytest.raises(DataError, match="not a readable NIfTI image"):
        collect_runs(root)
    tools.write_nifti(bold, None)  # 3D
    with pytest.raises(DataError, match=r"must be 4D, this image has shape \(3, 3, 2\)"):
        collect_runs(root)


def test_read_bold_header_time_units(tmp_path, tools):
    import nibabel as nib

    path = tools.write_nifti(tmp_path / "b.nii.gz", 7, tr=1500.0)
    img = nib.load(path)
    img.header.set_xyzt_units("mm", "msec")
    nib.save(img, path)
    assert read_bold_header(path) == (7, 1.5)


def test_no_usable_run(bids_factory, tools):
    root = bids_factory([tools.RunSpec("01", has_events=False)])
    with pytest.raises(InputMissingError) as info:
        collect_runs(root)
    assert "no usable run" in str(info.value) and "sub-01_task-scenes_run-1: no events.tsv" in str(
        info.value
    )


def test_legacy_fmriprep_names_are_read(bids_factory, tools):
    R = tools.RunSpec
    root = bids_factory(
        [R("01", session="1", run="01"), R("01", session="1", run="02", has_confounds=False)],
        legacy=True,
        space="T1w",
        raw_tr=1.75,
    )
    assert not (root / "derivatives/fmriprep/dataset_description.json").exists()
    assert find_derivatives(root) == [root / "derivatives/fmriprep"]
    runs = collect_runs(root, space="T1w")
    assert [r.name for r in runs] == [
        "sub-01_ses-1_task-scenes_run-01",
        "sub-01_ses-1_task-scenes_run-02",
    ]
    assert runs[0].bold.name == "sub-01_ses-1_task-scenes_run-01_bold_space-T1w_preproc.nii.gz"
    assert runs[0].mask.name == "sub-01_ses-1_task-scenes_run-01_bold_space-T1w_brainmask.nii.gz"
    assert runs[0].confounds.name == "sub-01_ses-1_task-scenes_run-01_bold_confounds.tsv"
    assert runs[1].confounds is None
    assert runs[0].tr == 1.75  # legacy outputs have no JSON: the raw metadata
    assert runs[0].n_volumes == 12


def test_list_participants_and_find_derivatives(tmp_path, tools, caplog):
    root = tools.make_bids(tmp_path / "ds", [tools.RunSpec("01"), tools.RunSpec("A2")])
    (root / "sub-03.txt").write_text("not a folder")
    (root / "derivatives" / "notes.txt").write_text("x")
    (root / "derivatives" / ".cache").mkdir()
    (root / "derivatives" / "empty").mkdir()
    described = root / "derivatives" / "mriqc"
    described.mkdir()
    (described / "dataset_description.json").write_text(json.dumps({"Name": "mriqc"}))
    # an earlier bids_vem output: our summary TSVs have subject/session/task columns, which
    # pybids would read as conflicting entities; it holds no preprocessed BOLD: not indexed
    ours = root / "derivatives" / "bids_vem" / "sub-01" / "func"
    ours.mkdir(parents=True)
    (ours / "sub-01_task-scenes_desc-summary_encoding.tsv").write_text("subject\ttask\n01\tx\n")
    (ours.parent.parent / "dataset_description.json").write_text(json.dumps({"Name": "bids_vem"}))
    # fMRIPrep outputs without dataset_description.json (fMRIPrep < 1.2, NOD): used, with a warning
    bare = root / "derivatives" / "old_fmriprep" / "sub-01" / "func"
    tools.write_nifti(bare / "sub-01_task-scenes_run-1_bold_space-T1w_preproc.nii.gz", 4)
    assert list_participants(root) == ["01", "A2"]
    with caplog.at_level(logging.WARNING, logger="bids_vem.inputs.layout"):
        found = find_derivatives(root)
    # derivatives without preprocessed BOLD (MRIQC, our own outputs) are not indexed at all
    assert found == [root / "derivatives/fmriprep", root / "derivatives/old_fmriprep"]
    assert "old_fmriprep has no dataset_description.json" in caplog.text
    assert find_derivatives(tmp_path) == []
    assert collect_runs(root, participant_label=["01"])  # our outputs beside do not break pybids
    with pytest.raises(InputMissingError, match="bind mounts"):
        list_participants(tmp_path / "absent")


# ----------------------------------------------------------------------------- shared fixtures
@pytest.mark.fixtures
def test_fixture_ds000001_fmriprep_query(shared_fixtures):
    root = shared_fixtures / "bids-examples" / "ds000001-fmriprep"
    expected = sorted(
        root.glob("sub-*/func/*_space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.nii.gz")
    )
    found = find_preproc_bold([root], space="MNI152NLin2009cAsym")
    assert [p.bold for p in found] == sorted(
        expected, key=lambda p: (p.name.split("_space")[0], str(p))
    )
    assert len(found) == len(expected) > 0
    for pre in found:
        assert pre.mask.name == pre.bold.name.replace("desc-preproc_bold", "desc-brain_mask")
        assert pre.mask.is_file() and pre.confounds.is_file()
        assert pre.confounds.name.endswith("_desc-confounds_timeseries.tsv")
        assert pre.tr == 2.0 and not pre.legacy and pre.task == "balloonanalogrisktask"
    assert {p.subject for p in find_preproc_bold([root], participant_label=["sub-16"])} == {"16"}
    with pytest.raises(
        InputMissingError,
        match="space fsLR .*; spaces found: MNI152NLin2009cAsym, fsaverage5, fsnative$",
    ):
        find_preproc_bold([root], space="fsLR")
    # fMRIPrep 20.2's surfaces: one pair of hemispheres per run, confounds shared with volumes
    lefts = sorted(root.glob("sub-*/func/*_space-fsaverage5_hemi-L_bold.func.gii"))
    surfaces = find_preproc_bold([root], space="fsaverage5")
    assert sorted(p.bold for p in surfaces) == lefts and len(lefts) > 0
    for pre in surfaces:
        assert pre.bold_right.name == pre.bold.name.replace("hemi-L", "hemi-R")
        assert pre.mask is None and pre.confounds.is_file()


@pytest.mark.fixtures
def test_fixture_synthetic_fmriprep(shared_fixtures):
    """fMRIPrep 1.0.6 outputs renamed to BIDS derivatives (label-brain_mask, bare _timeseries.tsv)."""
    root = shared_fixtures / "bids-examples" / "synthetic"
    # its events (inherited from task-nback_events.tsv) have no stim_file column
    with pytest.raises(
        InputMissingError, match="has no stimulus column 'stim_file' \\(nor condition"
    ):
        collect_runs(root)
    runs, skipped = collect_runs_report(root, stim_column="trial_type", participant_label=["01"])
    assert [r.name for r in runs] == [
        f"sub-01_ses-{s}_task-nback_run-{r}" for s in ("01", "02") for r in ("01", "02")
    ]
    run = runs[0]
    assert run.events == root / "task-nback_events.tsv"
    assert run.mask.name.endswith("_space-MNI152NLin2009cAsym_label-brain_mask.nii")
    assert run.confounds.name == "sub-01_ses-01_task-nback_run-01_timeseries.tsv"
    assert (run.tr, run.n_volumes) == (2.5, 64)  # header-only NIfTI: the header is enough
    assert sorted(s.split(":")[0] for s in skipped) == [
        "sub-01_ses-01_task-rest",
        "sub-01_ses-02_task-rest",
    ]


@pytest.mark.fixtures
def test_fixture_bold5000_legacy(shared_fixtures):
    root = shared_fixtures / "bold5000-ds001499-skeleton"
    found = find_preproc_bold(find_derivatives(root), space="T1w")
    assert len(found) == 20 and all(p.legacy for p in found)
    assert {p.session for p in found} == {"01", "02"}
    assert all(p.mask is not None and p.confounds is not None for p in found)
    with pytest.raises(InputMissingError, match="spaces found: T1w"):
        find_preproc_bold(find_derivatives(root))
    # the BOLD series were annexed upstream: empty here
    with pytest.raises(InputMissingError) as info:
        collect_runs(root, space="T1w")
    assert str(info.value).startswith("20 preprocessed BOLD file(s) cannot be read")
    assert "run-01_bold_space-T1w_preproc.nii.gz: empty file" in str(info.value)


@pytest.mark.fixtures
def test_fixture_ds000117_has_no_fmriprep(shared_fixtures):
    root = shared_fixtures / "bids-examples" / "ds000117"
    # its derivatives (FreeSurfer, MEG) hold no preprocessed BOLD: never indexed, and said so
    with pytest.raises(
        InputMissingError, match="no preprocessed BOLD \\(fMRIPrep\\) in any derivative"
    ):
        collect_runs(root, participant_label=["01"])


def test_events_outside_the_run_are_refused_with_exit_65(bids_factory, tools, caplog):
    # onsets in milliseconds: every event after the end of the run
    in_ms = [(0, 1, "a.png"), (4000, 1, "b.png"), (8000, 1, "a.png"), (12000, 1, "b.png")]
    root = bids_factory([tools.RunSpec("01", events=in_ms)])
    with pytest.raises(DataError) as info:
        collect_runs(root)
    assert info.value.exit_code == 65
    message = str(info.value)
    assert "sub-01_task-scenes_run-1_events.tsv: 3 of 4 events start after the run's" in message
    assert "4000, 8000, 12000" in message and "milliseconds" in message
    # one late event (a scan stopped early) is dropped with a warning, the run kept
    late = [(0, 1, "a.png"), (4, 1, "b.png"), (6, 1, "a.png"), (10_000, 1, "b.png")]
    root = bids_factory([tools.RunSpec("01", events=late)])
    with caplog.at_level(logging.WARNING):
        runs = collect_runs(root)
    assert len(runs) == 1 and "1 of 4 events start after" in caplog.text
