"""Report figures: stat maps of r on a brain and histograms of r (nilearn + matplotlib, offline)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import nibabel as nib
import numpy as np

from bids_vem.outputs.atomic import atomic_path

__all__ = [
    "plot_r_map",
    "plot_glass_r_map",
    "plot_r_histogram",
    "plot_layer_profile",
    "cut_coords_of_peak",
    "shared_cut_coords",
    "write_map_viewer",
]

#: sequential colour map of positive r (what a held-out prediction can claim)
POSITIVE_CMAP = "hot"


def _use_agg() -> None:
    # reports are written on headless machines: never open a window
    if matplotlib.get_backend().lower() != "agg":
        matplotlib.use("Agg", force=True)


def _save(figure, out_file: Path, dpi: int = 100) -> None:
    """Write a figure atomically, in the format of its suffix (PNG by default)."""
    with atomic_path(out_file) as tmp:
        figure.savefig(tmp, dpi=dpi, format=out_file.suffix.lstrip(".") or "png")


def cut_coords_of_peak(image: nib.spatialimages.SpatialImage) -> tuple[float, float, float]:
    """World coordinates (mm) of the voxel of largest |value|, or of the volume centre if none.

    Always inside the volume, unlike nilearn's default cuts on small or cropped volumes.
    """
    data = np.asarray(image.dataobj, dtype=np.float64)
    magnitude = np.where(np.isfinite(data), np.abs(data), 0.0)
    if magnitude.max() > 0:
        index = np.unravel_index(int(np.argmax(magnitude)), data.shape)
    else:
        index = tuple((n - 1) / 2 for n in data.shape[:3])
    x, y, z = nib.affines.apply_affine(image.affine, np.asarray(index[:3], dtype=np.float64))
    return float(x), float(y), float(z)


def shared_cut_coords(stat_map_paths: Sequence[Path | str]) -> tuple[float, float, float] | None:
    """One set of cuts for several maps on one grid: through the peak of their largest
    positive value, so that feature spaces are compared at the same place. None for surface
    maps or maps on different grids."""
    from bids_vem.outputs.surfaces import is_surface_map

    if not stat_map_paths or any(is_surface_map(p) for p in stat_map_paths):
        return None
    images = [nib.load(str(p)) for p in stat_map_paths]
    if len({(im.shape[:3], tuple(np.round(im.affine, 4).ravel())) for im in images}) != 1:
        return None
    stacked = np.stack([np.asarray(im.dataobj, dtype=np.float64) for im in images])
    best = np.nanmax(np.where(np.isfinite(stacked), stacked, -np.inf), axis=0)
    best = np.where(np.isfinite(best), np.maximum(best, 0), 0)
    return cut_coords_of_peak(nib.Nifti1Image(best, images[0].affine))


def _positive(image: nib.spatialimages.SpatialImage) -> nib.Nifti1Image:
    data = np.asarray(image.dataobj, dtype=np.float32)
    return nib.Nifti1Image(np.where(np.isfinite(data) & (data > 0), data, 0), image.affine)


def _background(stat_map_path: Path, bg_img):
    if bg_img != "auto":
        return bg_img
    # the MNI template is bundled with nilearn (no download); only right for MNI-space maps
    if "space-MNI152" in stat_map_path.name:
        from nilearn.datasets import load_mni152_template

        return load_mni152_template(resolution=2)
    return None


def plot_r_map(
    stat_map_path: Path | str,
    out_file: Path | str,
    *,
    title: str,
    threshold: float = 0.1,
    vmax: float | None = None,
    bg_img="auto",
    cut_coords: Sequence[float] | None = None,
    positive_only: bool = False,
) -> Path:
    """Plot a correlation map in three orthogonal cuts through its peak; returns ``out_file``.

    Parameters
    ----------
    stat_map_path : path
        A 3D ``stat-r`` NIfTI map; surface maps are drawn on their meshes
        (:func:`bids_vem.reports.surface_figures.plot_surface_r_map`).
    out_file : path
        ``.png`` or ``.svg``; written atomically.
    title : str
        Figure title.
    threshold : float
        |r| below this is not drawn.
    vmax : float, optional
        Colour scale limit (default: the map's largest |r|, at least ``threshold``).
    bg_img : "auto", image, path or None
        Background; "auto" uses nilearn's bundled MNI152 template for ``space-MNI152*`` maps
        and none otherwise.
    cut_coords : (x, y, z), optional
        Where to cut (mm); default: the map's peak (:func:`shared_cut_coords` gives one place
        for several maps).
    positive_only : bool
        Draw r > ``threshold`` only, on a sequential colour map (:data:`POSITIVE_CMAP`);
        default: |r| > ``threshold`` on a diverging one.
    """
    from bids_vem.outputs.surfaces import is_surface_map

    if is_surface_map(stat_map_path):
        from bids_vem.reports.surface_figures import plot_surface_r_map

        return plot_surface_r_map(
            stat_map_path, out_file, title=title, threshold=threshold, vmax=vmax,
            positive_only=positive_only,
        )  # fmt: skip
    _use_agg()
    import matplotlib.pyplot as plt
    from nilearn import plotting

    stat_map_path = Path(stat_map_path)
    out_file = Path(out_file)
    image = nib.load(str(stat_map_path))
    if positive_only:
        image = _positive(image)
    data = np.asarray(image.dataobj, dtype=np.float64)
    peak = float(np.nanmax(np.abs(data))) if np.isfinite(data).any() else 0.0
    if vmax is None:
        vmax = max(peak, threshold, 1e-6)
    figure = plt.figure(figsize=(9, 3))
    try:
        with warnings.catch_warnings():
            # a map with nothing above threshold is a result, not a problem
            warnings.filterwarnings("ignore", message="empty mask", category=UserWarning)
            plotting.plot_stat_map(
                image,
                bg_img=_background(stat_map_path, bg_img),
                cut_coords=tuple(cut_coords)
                if cut_coords is not None
                else cut_coords_of_peak(image),
                display_mode="ortho",
                threshold=threshold,
                vmax=vmax,
                cmap=POSITIVE_CMAP if positive_only else "cold_hot",
                symmetric_cbar=not positive_only,
                title=title,
                figure=figure,
                colorbar=True,
                draw_cross=False,
            )
        _save(figure, out_file)
    finally:
        plt.close(figure)
    return out_file


def plot_mask_outline(mask_img, out_file: Path | str, *, title: str, mni: bool) -> Path:
    """The outline of a brain mask over the MNI template (or over the mask itself, outside
    MNI space), in three cuts; returns ``out_file``."""
    _use_agg()
    import matplotlib.pyplot as plt
    from nilearn import plotting

    out_file = Path(out_file)
    if mni:
        from nilearn.datasets import load_mni152_template

        background = load_mni152_template(resolution=2)
    else:
        background = mask_img
    figure = plt.figure(figsize=(9, 3))
    try:
        display = plotting.plot_anat(
            background, display_mode="ortho", title=title, figure=figure, draw_cross=False,
            cut_coords=cut_coords_of_peak(mask_img) if not np.any(mask_img.get_fdata()) else
            tuple(nib.affines.apply_affine(
                mask_img.affine, np.argwhere(mask_img.get_fdata() > 0).mean(0)
            )),
        )  # fmt: skip
        display.add_contours(mask_img, levels=[0.5], colors="#d62728", linewidths=1.5)
        _save(figure, out_file)
    finally:
        plt.close(figure)
    return out_file


def plot_best_space(
    label_map: Path | str, names: Sequence[str], out_file: Path | str, *, title: str
) -> Path:
    """Which feature space predicts each voxel best, one colour per space (volume maps; a
    surface map is drawn as its r maps are); returns ``out_file``."""
    from bids_vem.outputs.surfaces import is_surface_map

    if is_surface_map(label_map):
        return plot_r_map(label_map, out_file, title=title, threshold=0.5, positive_only=True)
    _use_agg()
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch
    from nilearn import plotting

    out_file = Path(out_file)
    image = nib.load(str(label_map))
    colours = [plt.get_cmap("tab10")(i % 10) for i in range(len(names))]
    figure = plt.figure(figsize=(9, 3.4))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plotting.plot_roi(
                image, bg_img=_background(Path(label_map), "auto"), cmap=ListedColormap(colours),
                vmin=1, vmax=max(len(names), 2), display_mode="ortho", title=title,
                figure=figure, draw_cross=False, colorbar=False, black_bg=False,
                cut_coords=cut_coords_of_peak(image),
            )  # fmt: skip
        figure.legend(
            handles=[Patch(color=c, label=n) for c, n in zip(colours, names, strict=True)],
            loc="lower center", ncol=min(len(names), 5), frameon=False, fontsize="small",
        )  # fmt: skip
        _save(figure, out_file)
    finally:
        plt.close(figure)
    return out_file


def plot_glass_r_map(
    stat_map_path: Path | str, out_file: Path | str, *, title: str, threshold: float
) -> Path:
    """Positive r above ``threshold`` on a glass brain (MNI-space volumes); returns
    ``out_file``."""
    _use_agg()
    import matplotlib.pyplot as plt
    from nilearn import plotting

    out_file = Path(out_file)
    image = _positive(nib.load(str(stat_map_path)))
    peak = float(np.max(np.asarray(image.dataobj)))
    figure = plt.figure(figsize=(9, 3))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="empty mask", category=UserWarning)
            plotting.plot_glass_brain(
                image, threshold=threshold, vmax=max(peak, threshold, 1e-6), cmap=POSITIVE_CMAP,
                colorbar=True, plot_abs=False, symmetric_cbar=False, title=title, figure=figure,
                display_mode="lyrz",
            )  # fmt: skip
        _save(figure, out_file)
    finally:
        plt.close(figure)
    return out_file


def write_map_viewer(
    stat_map_path: Path | str, out_file: Path | str, *, title: str, threshold: float
) -> Path:
    """An interactive slice viewer of positive r (nilearn's ``view_img``) as a standalone HTML
    page that works offline (its scripts are inlined); returns ``out_file``."""
    from nilearn import plotting

    out_file = Path(out_file)
    image = _positive(nib.load(str(stat_map_path)))
    peak = float(np.max(np.asarray(image.dataobj)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        view = plotting.view_img(
            image, bg_img=_background(Path(stat_map_path), "auto") or False,
            threshold=threshold, vmax=max(peak, threshold, 1e-6), cmap=POSITIVE_CMAP,
            symmetric_cmap=False, title=title, black_bg=False,
        )  # fmt: skip
    with atomic_path(out_file) as tmp:
        Path(tmp).write_text(view.get_standalone(), encoding="utf-8")
    return out_file


def plot_r_histogram(
    r: np.ndarray,
    out_file: Path | str,
    *,
    title: str,
    threshold: float = 0.1,
) -> Path:
    """Histogram of per-voxel correlations with the threshold marked; returns ``out_file``.

    Parameters
    ----------
    r : ndarray, shape (n_voxels,)
        Correlations (NaN ignored).
    out_file : path
        ``.png`` or ``.svg``; written atomically.
    """
    _use_agg()
    import matplotlib.pyplot as plt

    out_file = Path(out_file)
    values = np.asarray(r, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    figure, axes = plt.subplots(figsize=(5, 3))
    try:
        axes.hist(values, bins=50, color="#4c72b0")
        axes.axvline(threshold, color="#c44e52", linestyle="--", label=f"r = {threshold:g}")
        axes.set_xlabel("r (held-out runs)")
        axes.set_ylabel("voxels")
        axes.set_title(title)
        axes.legend(frameon=False)
        figure.tight_layout()
        _save(figure, out_file)
    finally:
        plt.close(figure)
    return out_file


def plot_layer_profile(rows: Sequence[Mapping], out_file: Path | str, *, title: str) -> Path:
    """Mean held-out r layer by layer, over the mask and in each region; returns ``out_file``.

    Parameters
    ----------
    rows : sequence of mappings
        :func:`bids_vem.analysis.layers.layer_profile_rows` (``layer``, ``mean_r`` and
        ``mean_r_roi-<name>`` per region).
    """
    _use_agg()
    import matplotlib.pyplot as plt

    out_file = Path(out_file)
    layers = [row["layer"] for row in rows]
    series = {"whole mask": [row["mean_r"] for row in rows]}
    for key in rows[0] if rows else ():
        if key.startswith("mean_r_roi-"):
            series[key.removeprefix("mean_r_roi-")] = [row[key] for row in rows]
    figure, axes = plt.subplots(figsize=(5, 3))
    try:
        for label, values in series.items():
            axes.plot(layers, values, marker="o", label=label)
        axes.set_xlabel("layer")
        axes.set_ylabel("mean r (held-out)")
        axes.set_xticks(layers)
        axes.set_title(title)
        axes.legend(frameon=False, fontsize="small")
        figure.tight_layout()
        _save(figure, out_file)
    finally:
        plt.close(figure)
    return out_file


def _region_bars(
    regions: Sequence[str],
    series: Sequence[tuple[str, Sequence[float], dict]],
    out_file: Path | str,
    *,
    title: str,
    ylabel: str,
) -> Path:
    """Grouped bars, one group per region and one bar per series ``(label, means, bar
    options)``; returns ``out_file``."""
    _use_agg()
    import matplotlib.pyplot as plt

    out_file = Path(out_file)
    width = 0.8 / max(1, len(series))
    figure, axes = plt.subplots(figsize=(max(5, 1.5 * len(regions) * len(series) ** 0.5), 3))
    try:
        for k, (label, means, options) in enumerate(series):
            axes.bar(np.arange(len(regions)) + (k - (len(series) - 1) / 2) * width, means, width,
                     label=label, **options)  # fmt: skip
        axes.axhline(0, color="black", linewidth=0.5)
        axes.set_xticks(np.arange(len(regions)), regions)
        axes.set_ylabel(ylabel)
        axes.set_title(title)
        axes.legend(frameon=False, fontsize="x-small")
        figure.tight_layout()
        _save(figure, out_file)
    finally:
        plt.close(figure)
    return out_file


def _value(rows: Sequence[Mapping], column: str, **where) -> float:
    """``column`` of the first row whose fields equal ``where``, else NaN."""
    return next((r[column] for r in rows if all(r[k] == v for k, v in where.items())), np.nan)


def plot_partition(rows: Sequence[Mapping], out_file: Path | str, *, title: str) -> Path:
    """Mean unique and shared variance (and the joint R^2) per region, as bars; returns
    ``out_file``.

    Parameters
    ----------
    rows : sequence of mappings
        :func:`bids_vem.analysis.variance_partitioning.partition_rows`.
    """
    shown = [r for r in rows if r["component"] in ("joint", "unique", "shared")]
    regions = list(dict.fromkeys(r["region"] for r in shown))
    labels = list(dict.fromkeys((r["component"], r["label"]) for r in shown))
    series = [
        (f"{component} {label}",
         [_value(shown, "mean_r2", region=region, component=component, label=label)
          for region in regions], {})
        for component, label in labels
    ]  # fmt: skip
    return _region_bars(regions, series, out_file, title=title, ylabel="mean held-out R^2")


def plot_transfer(rows: Sequence[Mapping], out_file: Path | str, *, title: str) -> Path:
    """Mean transfer r (dark) and the target space's within-task r (light) per region, as
    bars, for each transfer; returns ``out_file``.

    Parameters
    ----------
    rows : sequence of mappings
        :func:`bids_vem.workflows.analysis_outputs.transfer_rows`.
    """
    regions = list(dict.fromkeys(r["region"] for r in rows))
    series = []
    for k, label in enumerate(dict.fromkeys(r["transfer"] for r in rows)):
        target = label.split(" ")[0].split("->")[-1]
        for column, name, shade in (
            ("mean_r", label, 1.0),
            ("within_mean_r", f"within {target}", 0.45),
        ):
            means = [_value(rows, column, region=region, transfer=label) for region in regions]
            series.append((name, means, {"color": f"C{k}", "alpha": shade}))
    return _region_bars(regions, series, out_file, title=title, ylabel="mean r on the target task")


def plot_training_curves(metrics_tsv: Path | str, out_file: Path | str, *, title: str) -> Path:
    """The alignment's training curves from its ``metrics.tsv``: training and validation
    loss, validation retrieval recall@1 both ways, and the temperature, by epoch (epoch 0:
    before alignment); returns ``out_file``."""
    _use_agg()
    import matplotlib.pyplot as plt
    import pandas as pd

    out_file = Path(out_file)
    metrics = pd.read_csv(metrics_tsv, sep="\t")
    panels = [
        ("loss", [c for c in ("train_loss", "val_loss") if c in metrics]),
        ("recall@1 (validation)", [c for c in ("val_i2t_r1", "val_t2i_r1") if c in metrics]),
        ("temperature", [c for c in ("temperature",) if c in metrics]),
    ]
    panels = [(label, columns) for label, columns in panels if columns]
    figure, axes = plt.subplots(1, max(1, len(panels)), figsize=(4 * max(1, len(panels)), 3))
    axes = np.atleast_1d(axes)
    names = {"train_loss": "training", "val_loss": "validation", "val_i2t_r1": "image→caption",
             "val_t2i_r1": "caption→image", "temperature": "temperature"}  # fmt: skip
    try:
        for axis, (label, columns) in zip(axes, panels, strict=False):
            for column in columns:
                axis.plot(metrics["epoch"], metrics[column], marker="o", label=names[column])
            axis.set_xlabel("epoch (0: before alignment)")
            axis.set_ylabel(label)
            axis.legend(frameon=False, fontsize="small")
        figure.suptitle(title)
        figure.tight_layout()
        _save(figure, out_file)
    finally:
        plt.close(figure)
    return out_file


def plot_region_bars(rows: Sequence[Mapping], out_file: Path | str, *, title: str) -> Path:
    """Mean held-out r of each feature space over the mask and in each region, as bars;
    returns ``out_file``.

    Parameters
    ----------
    rows : sequence of mappings
        :func:`bids_vem.analysis.comparison.compare_feature_spaces` (``feature_space``,
        ``mean_r`` and ``mean_r_roi-<name>``).
    """
    rois = [k.removeprefix("mean_r_roi-") for k in rows[0] if k.startswith("mean_r_roi-")]
    series = [
        (row["feature_space"], [row["mean_r"]] + [row[f"mean_r_roi-{r}"] for r in rois], {})
        for row in rows
    ]
    return _region_bars(["mask", *rois], series, out_file, title=title, ylabel="mean held-out r")
