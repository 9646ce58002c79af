"""Surface figures of r maps: lateral, medial and ventral views of both hemispheres (and the
flattened cortex where a flat mesh is at hand), offline.

Meshes that need no download: fsaverage5 bundled with nilearn (inflated and flat, with its
sulcal depth as background), and fsLR 32k (conte69 midthickness) from the ``brainspace`` wheel's data
files, read as GIFTI without importing brainspace. fsaverage and fsaverage6 maps are shown on
fsaverage5 by keeping its vertices: the fsaverage meshes are nested icosahedra whose first
10,242 vertices per hemisphere are fsaverage5's, at the same places (decimation, no
interpolation). Maps in native space (fsnative) have no template mesh: they are refused with
a message the report shows.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_vem.errors import DataError
from bids_vem.inputs.surfaces import FSAVERAGE_VERTICES
from bids_vem.outputs.atomic import atomic_path
from bids_vem.outputs.surfaces import read_surface_map
from bids_vem.reports.figures import _use_agg

__all__ = ["SURFACE_VIEWS", "plot_surface_r_map", "surface_meshes"]

SURFACE_VIEWS = ("lateral", "medial", "ventral")
_FSAVERAGE5 = FSAVERAGE_VERTICES["fsaverage5"]
_FSLR_VERTICES = 32492


def _conte69() -> dict[str, Path]:
    spec = importlib.util.find_spec("brainspace")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "fsLR figures need the conte69 meshes of the brainspace package "
            "(pip install brainspace); the maps are written all the same"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets"
    return {
        "left": folder / "surfaces" / "conte69_32k_lh.gii",
        "right": folder / "surfaces" / "conte69_32k_rh.gii",
        "curvature": folder / "matrices" / "main_group" / "conte69_32k_curvature.csv",
    }


def surface_meshes(values: np.ndarray, geometry) -> tuple[dict, dict[str, np.ndarray], dict]:
    """Meshes, per-hemisphere values and background maps to draw a surface map on.

    Returns
    -------
    meshes : dict
        ``left``/``right`` to a mesh nilearn plots (a mesh object or a GIFTI path); ``flat``
        to the flat meshes per hemisphere, when there are any.
    values : dict
        ``left``/``right`` to one value per mesh vertex (NaN where there is no data).
    backgrounds : dict
        ``left``/``right`` to a background map (sulcal depth), or None.

    Raises
    ------
    DataError
        No offline template mesh for this space.
    """
    space = geometry.space
    if geometry.kind == "cifti":
        meshes = _conte69()
        per_hemi = {}
        models = geometry.brain_models
        for structure, sl, model in models.iter_structures():
            hemi = {"CIFTI_STRUCTURE_CORTEX_LEFT": "left", "CIFTI_STRUCTURE_CORTEX_RIGHT": "right"}
            if structure not in hemi:
                continue
            full = np.full(model.nvertices[structure], np.nan)
            full[model.vertex] = values[sl]
            if full.size != _FSLR_VERTICES:
                raise DataError(
                    f"a {full.size}-vertex cortex is not fsLR 32k: no mesh to draw it on"
                )
            per_hemi[hemi[structure]] = full
        # the mean curvature of both hemispheres (left then right) shades the folds
        backgrounds = {"left": None, "right": None}
        if meshes["curvature"].is_file():
            curvature = np.loadtxt(meshes["curvature"])
            backgrounds = {"left": curvature[:_FSLR_VERTICES], "right": curvature[_FSLR_VERTICES:]}
        return meshes, per_hemi, backgrounds
    if space not in FSAVERAGE_VERTICES:
        raise DataError(
            f"space {space} has no template mesh offline (fsaverage5 and fsLR do; fsaverage "
            "and fsaverage6 are shown on fsaverage5): no surface figure"
        )
    from nilearn.datasets import load_fsaverage, load_fsaverage_data

    parts = geometry.hemispheres(values)
    per_hemi = {}
    for hemi, name in (("L", "left"), ("R", "right")):
        if hemi not in parts:
            continue
        part = np.asarray(parts[hemi], dtype=np.float64)
        if part.size < _FSAVERAGE5:
            raise DataError(f"{space} maps of {part.size} vertices cannot be drawn on fsaverage5")
        per_hemi[name] = part[:_FSAVERAGE5]  # nested icosahedra: fsaverage5's vertices first
    fsaverage5 = load_fsaverage("fsaverage5")
    sulcal = load_fsaverage_data(mesh="fsaverage5", mesh_type="inflated", data_type="sulcal")
    meshes = {name: fsaverage5["inflated"].parts[name] for name in per_hemi}
    meshes["flat"] = {name: fsaverage5["flat"].parts[name] for name in per_hemi}
    backgrounds = {name: np.asarray(sulcal.data.parts[name]) for name in per_hemi}
    return meshes, per_hemi, backgrounds


def plot_surface_r_map(
    stat_map_path: Path | str,
    out_file: Path | str,
    *,
    title: str,
    threshold: float = 0.1,
    vmax: float | None = None,
    positive_only: bool = False,
) -> Path:
    """Plot a surface r map: one row per hemisphere, lateral, medial and ventral views.

    Parameters
    ----------
    stat_map_path : path
        A ``hemi-L`` GIFTI map (its ``hemi-R`` beside it) or a CIFTI ``.dscalar.nii`` map.
    out_file : path
        ``.png`` or ``.svg``; written atomically.
    threshold, vmax, positive_only
        As :func:`bids_vem.reports.figures.plot_r_map`.

    Raises
    ------
    DataError
        No template mesh offline for the map's space (the report says so instead).
    """
    _use_agg()
    import matplotlib.pyplot as plt
    from nilearn import plotting

    out_file = Path(out_file)
    values, geometry = read_surface_map(stat_map_path)
    if positive_only:
        values = np.where(np.isfinite(values) & (values > 0), values, 0)
    meshes, per_hemi, backgrounds = surface_meshes(values, geometry)
    finite = values[np.isfinite(values)]
    peak = float(np.abs(finite).max()) if finite.size else 0.0
    vmax = vmax if vmax is not None else max(peak, threshold, 1e-6)
    hemis = [h for h in ("left", "right") if h in per_hemi]
    views = SURFACE_VIEWS + (("flat",) if "flat" in meshes else ())
    figure, axes = plt.subplots(
        len(hemis),
        len(views),
        figsize=(3 * len(views), 2.6 * len(hemis)),
        subplot_kw={"projection": "3d"},
        squeeze=False,
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nilearn's notes on meshes and thresholds
            for row, hemi in enumerate(hemis):
                mesh = meshes[hemi]
                if isinstance(mesh, Path):
                    mesh = nib.load(mesh)
                    mesh = (mesh.darrays[0].data, mesh.darrays[1].data)
                for column, view in enumerate(views):
                    plotting.plot_surf_stat_map(
                        meshes["flat"][hemi] if view == "flat" else mesh,
                        np.nan_to_num(per_hemi[hemi]),
                        hemi=hemi,
                        # a flat mesh lies in the x-y plane: seen from above
                        view="dorsal" if view == "flat" else view,
                        bg_map=backgrounds[hemi],
                        threshold=threshold,
                        vmax=vmax,
                        cmap="hot" if positive_only else "cold_hot",
                        symmetric_cbar=not positive_only,
                        colorbar=row == 0 and column == len(views) - 1,
                        axes=axes[row, column],
                        figure=figure,
                        title=f"{hemi} {view}",
                    )
        figure.suptitle(title)
        with atomic_path(out_file) as tmp:
            figure.savefig(tmp, dpi=80, format=out_file.suffix.lstrip(".") or "png")
    finally:
        plt.close(figure)
    return out_file


def write_surface_viewer(
    stat_map_path: Path | str, out_file: Path | str, *, title: str, threshold: float
) -> Path:
    """An interactive 3D viewer of positive r on both hemispheres (nilearn's ``view_surf``
    with its niivue engine, whose scripts are inlined: it works offline) as a standalone HTML
    page; returns ``out_file``.

    Two repairs to nilearn 0.14's page, so that it opens without errors and without the
    network: its mouse handler is attached before its canvas exists (now only if it does),
    and its favicon is fetched from GitHub (now dropped).

    Raises
    ------
    DataError
        No template mesh offline for the map's space.
    """
    import re

    from nilearn import plotting
    from nilearn.surface import InMemoryMesh, PolyMesh, SurfaceImage

    out_file = Path(out_file)
    values, geometry = read_surface_map(stat_map_path)
    values = np.where(np.isfinite(values) & (values > 0), values, 0)
    meshes, per_hemi, backgrounds = surface_meshes(values, geometry)
    parts = {}
    for hemi in per_hemi:
        mesh = meshes[hemi]
        if isinstance(mesh, Path):
            gifti = nib.load(mesh)
            mesh = InMemoryMesh(gifti.darrays[0].data, gifti.darrays[1].data)
        parts[hemi] = mesh
    data = {hemi: np.nan_to_num(per_hemi[hemi]) for hemi in parts}
    image = SurfaceImage(mesh=PolyMesh(**parts), data=data)
    peak = max(float(np.max(v)) for v in data.values()) if data else 0.0
    background = None
    if all(backgrounds.get(h) is not None for h in parts):
        background = SurfaceImage(mesh=PolyMesh(**parts), data={h: backgrounds[h] for h in parts})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        view = plotting.view_surf(
            surf_map=image, bg_map=background, hemi="both" if len(parts) == 2 else next(iter(parts)),
            threshold=threshold, vmax=max(peak, threshold, 1e-6), vmin=0, cmap="hot",
            symmetric_cmap=False, title=title, engine="niivue",
        )  # fmt: skip
    html = view.get_standalone()
    html = html.replace(
        'document.getElementById("gl").addEventListener(',
        'document.getElementById("gl")?.addEventListener(',
    )
    html = re.sub(r'<link[^>]*rel="(?:shortcut )?icon"[^>]*>', "", html)
    with atomic_path(out_file) as tmp:
        Path(tmp).write_text(html, encoding="utf-8")
    return out_file
