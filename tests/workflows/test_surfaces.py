"""Surfaces end to end: fMRIPrep's fsaverage5 GIFTI pairs and fsLR CIFTI, with a signal planted
at known vertices of the left hemisphere (tests/skeletons.py: surfaces_from_demo)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy.stats import pearsonr

from bids_vem.cli.run import main
from bids_vem.demo.simulate import CONFOUND_COLUMNS
from bids_vem.outputs.surfaces import read_surface_map
from bids_vem.outputs.validator import validate_derivatives
from tests import skeletons
from tests.helpers import render_in_chromium

pytestmark = pytest.mark.slow

STEM = "sub-01_task-shapes_hemi-L_space-fsaverage5_desc-minilm"


def _argv(demo, out, work, derivatives, space, *extra, subjects=("01",)):
    return [
        str(demo.bids_dir), str(out), "participant", "-w", str(work), "--nprocs", "2",
        "--participant-label", *subjects, "--skip-bids-validation", "--space", space,
        "--derivatives", str(derivatives), "--captions", str(demo.captions_tsv),
        "--text-encoder", "minilm=sentence:all-MiniLM-L6-v2", "--confounds", *CONFOUND_COLUMNS,
        *extra,
    ]  # fmt: skip


def _planted_roi(path, planted, n_vertices):
    labels = np.zeros(n_vertices, dtype=np.int32)
    labels[planted] = 1
    array = nib.gifti.GiftiDataArray(
        labels, intent="NIFTI_INTENT_LABEL", datatype="NIFTI_TYPE_INT32"
    )
    nib.save(nib.GiftiImage(darrays=[array]), str(path))
    return path


@pytest.fixture(scope="module")
def fsaverage5(demo_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("fsaverage5")
    skeleton = skeletons.surfaces_from_demo(demo_dataset, root / "fmriprep", subjects=("01", "02"))
    roi = _planted_roi(root / "planted.hemi-L.label.gii", skeleton.planted["01"], 10242)
    out = root / "out"
    argv = _argv(
        demo_dataset, out, root / "work", skeleton.derivatives, "fsaverage5",
        "--roi", f"planted={roi}", subjects=("01", "02"),
    )  # fmt: skip
    assert main(argv) == 0
    return demo_dataset, skeleton, out


def test_fsaverage5_maps_find_the_planted_vertices_and_nothing_else(fsaverage5):
    demo, skeleton, out = fsaverage5
    func = out / "sub-01" / "func"
    values, geometry = read_surface_map(func / f"{STEM}_stat-r_statmap.func.gii")
    assert geometry.n_vertices == (10242, 10242)
    left, right = values[:10242], values[10242:]
    planted = skeleton.planted["01"]
    others = np.setdiff1d(np.arange(10042), planted)
    assert pearsonr(skeleton.amplitude["01"], left[planted])[0] > 0.4
    assert np.median(left[planted]) > np.quantile(np.concatenate([left[others], right]), 0.99)
    # the right hemisphere, noise only, never reaches the planted vertices' r
    assert np.quantile(left[planted], 0.05) > np.quantile(right, 0.999)
    # the medial wall (constant 0 in the BOLD) is out of the mask: exactly 0 in the maps
    assert np.all(left[10042:] == 0) and np.all(right[10042:] == 0)
    image = nib.load(func / f"{STEM}_stat-r_statmap.func.gii")
    assert image.darrays[0].intent == nib.nifti1.intent_codes["NIFTI_INTENT_CORREL"]
    assert image.meta["AnatomicalStructurePrimary"] == "CortexLeft"
    alpha = nib.load(func / f"{STEM.replace('hemi-L', 'hemi-R')}_stat-alpha_statmap.func.gii")
    assert alpha.darrays[0].intent == nib.nifti1.intent_codes["NIFTI_INTENT_ESTIMATE"]
    sidecar = json.loads((func / f"{STEM}_stat-r_statmap.json").read_text())
    assert "surface vertices with a finite, varying signal" in sidecar["BrainMask"]
    assert any("hemi-R_space-fsaverage5_bold.func.gii" in s for s in sidecar["Sources"])
    assert (func / f"{STEM.replace('hemi-L', 'hemi-R')}_stat-r_statmap.json").is_file()
    assert validate_derivatives(out) == []


def test_surface_regions_and_figures(fsaverage5, tmp_path):
    demo, skeleton, out = fsaverage5
    from PIL import Image

    values, _ = read_surface_map(out / "sub-01" / "func" / f"{STEM}_stat-r_statmap.func.gii")
    table = out / "sub-01" / "func" / "sub-01_task-shapes_space-fsaverage5_comparison.tsv"
    rows = [line.split("\t") for line in table.read_text().splitlines()]
    mean_roi = float(rows[1][rows[0].index("mean_r_roi-planted")])
    np.testing.assert_allclose(mean_roi, values[skeleton.planted["01"]].mean(), atol=1e-4)
    figures = list((out / "sub-01" / "figures").glob("*hemi-L*fsaverage5*rmap.png")) or list(
        (out / "sub-01" / "figures").glob("*fsaverage5*rmap.png")
    )
    assert figures, sorted(p.name for p in (out / "sub-01" / "figures").iterdir())
    pixels = np.asarray(Image.open(figures[0]).convert("L"), dtype=float)
    assert pixels.std() > 10  # not blank
    assert "figure for" not in (out / "sub-01.html").read_text()
    # the 3D viewer of both hemispheres opens offline, without console errors, and draws
    (viewer,) = (out / "sub-01" / "figures").glob("*fsaverage5*desc-minilm_viewer.html")
    assert "raw.githubusercontent" not in viewer.read_text()
    shot, console = render_in_chromium(viewer, tmp_path, size="800,520", budget_ms=5000)
    assert [line for line in console if "Uncaught" in line or "rror" in line] == []
    assert shot.std() > 0.05


def test_group_level_on_the_surface(fsaverage5):
    demo, skeleton, out = fsaverage5
    argv = [str(demo.bids_dir), str(out), "group", "--skip-bids-validation"]
    assert main(argv) == 0
    group = out / "group"
    t, geometry = read_surface_map(
        group / "task-shapes_hemi-L_space-fsaverage5_desc-minilm_stat-t_statmap.func.gii"
    )
    meanr, _ = read_surface_map(
        group / "task-shapes_hemi-L_space-fsaverage5_desc-minilm_stat-meanr_statmap.func.gii"
    )
    both = np.intersect1d(skeleton.planted["01"], skeleton.planted["02"])
    neither = np.setdiff1d(
        np.arange(10042), np.union1d(skeleton.planted["01"], skeleton.planted["02"])
    )
    assert geometry.n_vertices == (10242, 10242)
    assert both.size and np.median(meanr[both]) > np.quantile(meanr[neither], 0.99)
    assert np.all(t[10242 + 10042 :] == 0)
    from PIL import Image

    figure = Image.open(group / "figures" / "task-shapes_desc-minilm_meanr.png").convert("L")
    assert np.asarray(figure, dtype=float).std() > 10  # the mean r drawn on the surface
    assert "figure of" not in (group / "group.html").read_text()
    assert validate_derivatives(out) == []


def test_fslr_cifti_maps_keep_the_grayordinates(demo_dataset, tmp_path):
    skeleton = skeletons.surfaces_from_demo(demo_dataset, tmp_path / "fmriprep", kind="cifti")
    out = tmp_path / "out"
    argv = _argv(
        demo_dataset, out, tmp_path / "work", skeleton.derivatives, "fsLR", "--atlas", "schaefer100"
    )
    assert main(argv) == 0
    name = "sub-01_task-shapes_space-fsLR_den-91k_desc-minilm_stat-r_statmap.dscalar.nii"
    image = nib.load(out / "sub-01" / "func" / name)
    bold = nib.load(
        next((skeleton.derivatives / "sub-01" / "func").glob("*run-1*_bold.dtseries.nii"))
    )
    assert list(image.header.get_axis(0).name) == ["r"]
    assert image.header.get_axis(1) == bold.header.get_axis(1)  # the input's grayordinates
    values = np.asarray(image.get_fdata())[0]
    n_left = skeleton.n_points[0]
    planted = skeleton.planted["01"]
    rest = np.setdiff1d(np.arange(values.size), planted)
    assert np.median(values[planted]) > np.quantile(values[rest], 0.99)
    assert pearsonr(skeleton.amplitude["01"], values[planted])[0] > 0.4
    assert values[:n_left][planted].min() > values[n_left:].max() - 0.2
    # r per Schaefer parcel: the parcels' means of the map, by the atlas's vertex labels
    from bids_vem.analysis.parcels import atlas_labels

    models = image.header.get_axis(1)
    labels = np.zeros(values.size, dtype=int)
    for structure, part, model in models.iter_structures():
        offset = {"CIFTI_STRUCTURE_CORTEX_LEFT": 0, "CIFTI_STRUCTURE_CORTEX_RIGHT": 32492}
        if structure in offset:
            labels[part] = atlas_labels("schaefer100")[offset[structure] + model.vertex]
    table = out / "sub-01" / "func" / "sub-01_task-shapes_space-fsLR_atlas-schaefer100_parcels.tsv"
    rows = [line.split("\t") for line in table.read_text().splitlines()]
    header, rows = rows[0], rows[1:]
    assert len(rows) == 100 and {row[header.index("feature_space")] for row in rows} == {"minilm"}
    for row in rows[::17]:
        parcel = int(row[header.index("parcel")])
        inside = (labels == parcel) & (values != 0)
        assert int(row[header.index("n_points")]) == inside.sum()
        np.testing.assert_allclose(
            float(row[header.index("mean_r")]), values[inside].mean(), atol=1e-5
        )
    # drawn on the fsLR 32k (conte69) meshes
    from PIL import Image

    figure = out / "sub-01" / "figures" / "sub-01_task-shapes_space-fsLR_desc-minilm_rmap.png"
    assert np.asarray(Image.open(figure).convert("L"), dtype=float).std() > 10
    assert validate_derivatives(out) == []


def test_surface_regions_of_the_wrong_kind_or_size_stop_before_any_work(
    demo_dataset, tmp_path, capfd
):
    skeleton = skeletons.surfaces_from_demo(demo_dataset, tmp_path / "fmriprep")
    volume = next(demo_dataset.fmriprep_dir.glob("sub-01/func/*desc-brain_mask.nii.gz"))
    small = _planted_roi(tmp_path / "small.hemi-L.label.gii", [0, 1], 642)
    for roi, message in (
        (volume, "not a GIFTI or CIFTI region"),
        (small, "642 vertices, but the maps' hemisphere L has 10242"),
    ):
        argv = _argv(
            demo_dataset, tmp_path / "out", tmp_path / "work", skeleton.derivatives,
            "fsaverage5", "--roi", f"bad={roi}",
        )  # fmt: skip
        assert main(argv) == 65
        err = capfd.readouterr().err
        assert f"--roi bad={roi}: " in err and message in err
        assert not list((tmp_path / "work").glob("*/*/result_*.pklz"))  # no step ran


def test_single_trials_and_a_searchlight_on_fsaverage5(demo_dataset, tmp_path):
    """Trials estimated on the surface (LSS reads vertices as it reads voxels): the
    trial-wise model finds the planted patch, and the RSA searchlight on the fsaverage5 pial
    mesh peaks there."""
    skeleton = skeletons.surfaces_from_demo(demo_dataset, tmp_path / "fmriprep", patch=True)
    out = tmp_path / "out"
    argv = [
        str(demo_dataset.bids_dir), str(out), "participant", "--participant-label", "01",
        "--derivatives", f"fmriprep={skeleton.derivatives}", "--space", "fsaverage5",
        "--skip-bids-validation", "-w", str(tmp_path / "work"), "--nprocs", "2",
        "--captions", str(demo_dataset.captions_tsv),
        "--text-encoder", "minilm=sentence:all-MiniLM-L6-v2", "--design", "trialwise",
        "--rsa", "--rsa-radius", "8", "--permutations", "20",
    ]  # fmt: skip
    assert main(argv) == 0
    func = out / "sub-01" / "func"
    prefix = "sub-01_task-shapes_hemi-L_space-fsaverage5_desc-minilm"
    planted = skeleton.planted["01"]
    others = np.setdiff1d(np.arange(10042), planted)
    r = nib.load(func / f"{prefix}_stat-r_statmap.func.gii").darrays[0].data
    assert np.median(r[planted]) > np.percentile(r[others], 99)
    rho = nib.load(func / f"{prefix}_stat-rsarho_statmap.func.gii").darrays[0].data
    assert np.nanmedian(rho[planted]) > np.nanpercentile(rho[others], 95)
    assert abs(np.nanmedian(rho[others])) < 0.05
    assert (func / "sub-01_task-shapes_space-fsaverage5_label-mask_rdm.tsv").is_file()
    assert validate_derivatives(out) == []
