"""The demo's ground truth: stimulus features and, per subject, which voxels respond to what.

Two feature spaces drive the simulated BOLD:

- semantic: the mean all-MiniLM-L6-v2 embedding of an image's captions, reduced by PCA to
  a few components (so the signal is learnable from a few hundred volumes), scaled so that
  the first component has unit variance across stimuli;
- low-level: image statistics (luminance, colour opponency, contrast, centre of mass), z-scored.

Semantic voxels (ventral / lateral occipito-temporal cortex) respond to a random linear
combination of the semantic features, low-level voxels (occipital pole) to one of the
low-level features; every other voxel carries no stimulus signal. Weights are scaled so that
a voxel's response to the stimuli has a standard deviation equal to its amplitude, in
percent signal change at the peak of the response to one image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bids_vem.demo.volume import LOWLEVEL_REGIONS, SEMANTIC_REGIONS, region_profile

__all__ = [
    "VOXEL_CLASSES",
    "StimulusFeatures",
    "SubjectTruth",
    "semantic_features",
    "standardise",
    "draw_subject_truth",
]

#: dseg labels of the voxel-class map (0 is outside the brain)
VOXEL_CLASSES: dict[int, str] = {1: "none", 2: "semantic", 3: "lowlevel"}
_HEAD_CENTRE = np.array([0.0, -18.0, 18.0])


@dataclass(frozen=True)
class StimulusFeatures:
    """The true features of the stimuli.

    Attributes
    ----------
    stim_files : tuple of str
        Paths relative to ``stimuli/``, one per row.
    caption_embeddings : ndarray of shape (n_stimuli, n_embedding)
        Mean sentence embedding of each image's captions.
    semantic : ndarray of shape (n_stimuli, n_components)
        PCA scores of ``caption_embeddings`` divided by the standard deviation of the first.
    pca_components : ndarray of shape (n_components, n_embedding)
    pca_mean : ndarray of shape (n_embedding,)
    pca_scale : float
        ``semantic = (caption_embeddings - pca_mean) @ pca_components.T / pca_scale``.
    lowlevel_raw : ndarray of shape (n_stimuli, 6)
        Image statistics (``stimuli.LOWLEVEL_FEATURE_NAMES``).
    lowlevel : ndarray of shape (n_stimuli, 6)
        ``lowlevel_raw`` z-scored across stimuli.
    """

    stim_files: tuple[str, ...]
    caption_embeddings: np.ndarray
    semantic: np.ndarray
    pca_components: np.ndarray
    pca_mean: np.ndarray
    pca_scale: float
    lowlevel_raw: np.ndarray
    lowlevel: np.ndarray


def standardise(values: np.ndarray) -> np.ndarray:
    """Z-score the columns of ``values`` (constant columns become 0)."""
    values = np.asarray(values, dtype=np.float64)
    std = values.std(axis=0)
    return (values - values.mean(axis=0)) / np.where(std > 0, std, 1.0)


def semantic_features(
    embeddings: np.ndarray, n_components: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """PCA of the caption embeddings.

    Parameters
    ----------
    embeddings : ndarray of shape (n_stimuli, n_embedding)
    n_components : int

    Returns
    -------
    scores : ndarray of shape (n_stimuli, n_components)
        Divided by the standard deviation of the first component.
    components : ndarray of shape (n_components, n_embedding)
        Unit rows; signs fixed so that each row's largest entry is positive.
    mean : ndarray of shape (n_embedding,)
    scale : float
    """
    n_components = min(n_components, *embeddings.shape)
    mean = embeddings.mean(axis=0)
    _, _, vt = np.linalg.svd(embeddings - mean, full_matrices=False)
    components = vt[:n_components]
    # deterministic signs (as scikit-learn's svd_flip)
    signs = np.sign(components[np.arange(n_components), np.argmax(np.abs(components), axis=1)])
    components = components * signs[:, None]
    scores = (embeddings - mean) @ components.T
    scale = float(scores[:, 0].std())
    return scores / scale, components, mean, scale


@dataclass(frozen=True)
class SubjectTruth:
    """What drives each in-mask voxel of one subject (rows in the mask's C order).

    Attributes
    ----------
    voxel_class : ndarray of shape (n_voxels,), int8
        Keys of :data:`VOXEL_CLASSES`.
    semantic_weights : ndarray of shape (n_voxels, n_semantic)
    lowlevel_weights : ndarray of shape (n_voxels, n_lowlevel)
        BOLD (percent signal change, peak of one event) per unit of each feature.
    semantic_amplitude, lowlevel_amplitude : ndarray of shape (n_voxels,)
        Standard deviation across stimuli of each voxel's response (percent).
    noise_std : ndarray of shape (n_voxels,)
        Standard deviation of the AR(1) noise (percent).
    baseline : ndarray of shape (n_voxels,)
        Mean intensity.
    motion_loadings : ndarray of shape (n_voxels, 6)
        Percent signal change per mm (translations) and per radian (rotations).
    csf_loadings, white_matter_loadings : ndarray of shape (n_voxels,)
        Percent signal change per unit of the physiological signals.
    semantic_shift, lowlevel_shift : ndarray of shape (3,)
        This subject's offset (mm) of the region centres.
    """

    voxel_class: np.ndarray
    semantic_weights: np.ndarray
    lowlevel_weights: np.ndarray
    semantic_amplitude: np.ndarray
    lowlevel_amplitude: np.ndarray
    noise_std: np.ndarray
    baseline: np.ndarray
    motion_loadings: np.ndarray
    csf_loadings: np.ndarray
    white_matter_loadings: np.ndarray
    semantic_shift: np.ndarray
    lowlevel_shift: np.ndarray


def _unit_response_weights(
    features: np.ndarray, amplitude: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Random weights (n_voxels, n_features) whose response across stimuli has std ``amplitude``."""
    directions = rng.standard_normal((len(amplitude), features.shape[1]))
    response_std = (features @ directions.T).std(axis=0)
    return directions * (amplitude / response_std)[:, None]


def draw_subject_truth(
    coordinates: np.ndarray,
    features: StimulusFeatures,
    rng: np.random.Generator,
    *,
    semantic_amplitude: float = 1.0,
    lowlevel_amplitude: float = 1.0,
    noise_level: float = 1.0,
    motion_scale: float = 1.0,
    physiology_scale: float = 0.5,
    region_jitter: float = 3.0,
    baseline: float = 1000.0,
) -> SubjectTruth:
    """Draw one subject's voxel classes, weights, noise levels and nuisance loadings.

    Parameters
    ----------
    coordinates : ndarray of shape (n_voxels, 3)
        MNI coordinates (mm) of the in-mask voxels.
    features : StimulusFeatures
    rng : numpy.random.Generator
    semantic_amplitude, lowlevel_amplitude : float
        Response amplitude at a region's centre (half of it at its border), percent.
    noise_level : float
        Typical noise standard deviation (each voxel: 0.8 to 1.3 times this), percent.
    motion_scale, physiology_scale : float
        Size of the motion artefacts and of the physiological signals.
    region_jitter : float
        Standard deviation (mm) of the subject's shift of the region centres.
    baseline : float
        Typical mean intensity (each voxel: 0.85 to 1.15 times this).

    Returns
    -------
    SubjectTruth
    """
    n_voxels = len(coordinates)
    semantic_shift = rng.normal(0.0, region_jitter, 3)
    lowlevel_shift = rng.normal(0.0, region_jitter, 3)
    semantic_profile = region_profile(coordinates, SEMANTIC_REGIONS, semantic_shift)
    lowlevel_profile = region_profile(coordinates, LOWLEVEL_REGIONS, lowlevel_shift)
    # a voxel belongs to one class: the stronger region wins where two overlap
    is_semantic = (semantic_profile > 0) & (semantic_profile >= lowlevel_profile)
    is_lowlevel = (lowlevel_profile > 0) & ~is_semantic
    voxel_class = np.ones(n_voxels, dtype=np.int8)
    voxel_class[is_semantic] = 2
    voxel_class[is_lowlevel] = 3
    sem_amp = np.where(is_semantic, semantic_amplitude * semantic_profile, 0.0)
    low_amp = np.where(is_lowlevel, lowlevel_amplitude * lowlevel_profile, 0.0)
    semantic_weights = _unit_response_weights(features.semantic, sem_amp, rng)
    lowlevel_weights = _unit_response_weights(features.lowlevel, low_amp, rng)

    noise_std = noise_level * rng.uniform(0.8, 1.3, n_voxels)
    baselines = baseline * rng.uniform(0.85, 1.15, n_voxels)
    # motion artefacts grow with the distance from the centre of rotation
    lever = np.linalg.norm(coordinates - _HEAD_CENTRE, axis=1) / 70.0
    per_unit = np.array([0.5] * 3 + [0.5 * 50.0] * 3)  # % per mm; % per radian at 50 mm
    motion_loadings = motion_scale * rng.standard_normal((n_voxels, 6)) * per_unit * lever[:, None]
    csf_loadings = physiology_scale * rng.standard_normal(n_voxels)
    white_matter_loadings = physiology_scale * rng.standard_normal(n_voxels)
    return SubjectTruth(
        voxel_class=voxel_class,
        semantic_weights=semantic_weights,
        lowlevel_weights=lowlevel_weights,
        semantic_amplitude=sem_amp,
        lowlevel_amplitude=low_amp,
        noise_std=noise_std,
        baseline=baselines,
        motion_loadings=motion_loadings,
        csf_loadings=csf_loadings,
        white_matter_loadings=white_matter_loadings,
        semantic_shift=semantic_shift,
        lowlevel_shift=lowlevel_shift,
    )
