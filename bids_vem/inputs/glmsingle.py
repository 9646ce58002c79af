"""Single-trial betas of a whole session: GLMsingle's outputs and NSD's ``betas_sessionNN``.

GLMsingle (Prince et al. 2022) is run once per session on all its runs and writes, in one
folder per session, ``TYPED_FITHRF_GLMDENOISE_RR.npy`` (Python: a pickled dict whose
``betasmd`` is X x Y x Z x trials) or ``.mat`` (MATLAB: ``modelmd``), beside ``DESIGNINFO``
(``stimorder``: the condition of each trial; ``numtrialrun``: trials per run). NSD publishes
``betas_session01.nii.gz`` (one volume per trial). None of these names the stimulus of a
trial: their volumes are the session's trials in the order of time, runs in the order they
were given. Here the trials are therefore the stimulus events of the session's runs (runs
by number, events by onset; rows without a stimulus are not trials), checked against
``DESIGNINFO`` when it is there: as many trials per run, and one condition per stimulus.
A ``<name>.tsv`` beside the betas file naming each volume's stimulus overrides this.

Pickles can run code as they load, and a betas folder may come from anywhere: they are read
with an unpickler that builds NumPy arrays, dtypes and scalars only; any other object is an
inert placeholder, so nothing in the file is executed.
"""

from __future__ import annotations

import importlib
import logging
import pickle
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bids_vem.config import option_name
from bids_vem.errors import DataError, InputMissingError
from bids_vem.inputs.events import read_events
from bids_vem.inputs.runs import Run
from bids_vem.outputs.atomic import atomic_path

__all__ = [
    "GLMSINGLE_RESULTS",
    "DesignInfo",
    "is_session_betas",
    "load_pickled_npy",
    "read_betas_array",
    "read_design_info",
    "session_trials",
    "check_trial_order",
    "find_session_betas",
]

logger = logging.getLogger(__name__)

#: GLMsingle's result files, the final model first (type D: fitted HRF, GLMdenoise, ridge)
GLMSINGLE_RESULTS = ("TYPED_FITHRF_GLMDENOISE_RR", "TYPEC_FITHRF_GLMDENOISE", "TYPEB_FITHRF")
_NSD_SESSION = re.compile(r"^betas_session(\d+)\.nii(\.gz)?$")
#: keys of GLMsingle's results holding the single-trial betas (Python, MATLAB)
_BETAS_KEYS = ("betasmd", "modelmd")


def is_session_betas(path: Path) -> bool:
    """Whether ``path`` is a GLMsingle result file or an NSD ``betas_sessionNN`` image."""
    name = Path(path).name
    stem, _, suffix = name.partition(".")
    return bool(_NSD_SESSION.match(name)) or (
        stem in GLMSINGLE_RESULTS and suffix in ("npy", "mat")
    )


# --------------------------------------------------------------------------- safe reading
def _numpy_global(module: str, name: str):
    # numpy 2 moved numpy.core to numpy._core; pickles name either
    for prefix in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(module.replace("numpy.core", prefix)), name)
        except (ImportError, AttributeError):
            continue
    return None


#: the only callables a betas pickle may name: how NumPy pickles arrays, dtypes and scalars
#: (and how protocol-2 pickles carry bytes, ``_codecs.encode``)
_ALLOWED = {
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _Placeholder:
    """Stands for any object a betas pickle holds other than NumPy's: it accepts whatever
    the pickle does to it and does nothing."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __setstate__(self, state) -> None:
        pass

    def __setitem__(self, key, value) -> None:
        pass

    def append(self, value) -> None:
        pass

    def extend(self, values) -> None:
        pass


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        key = (module.replace("numpy._core", "numpy.core"), name)
        if key in _ALLOWED:
            if key[0] == "_codecs":
                import codecs

                return codecs.encode
            found = _numpy_global(*key) if key[0] != "numpy" else getattr(np, name)
            if found is not None:
                return found
        return _Placeholder


def _npy_dtype(stream) -> np.dtype:
    """The dtype in a ``.npy`` header; ``stream`` is left at the data."""
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream)[2]
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(stream)[2]
    raise ValueError(f"unsupported .npy format version {version}")


def load_pickled_npy(path: Path | str) -> object:
    """The object in a ``.npy`` file, built without running code from the file.

    Plain arrays are memory-mapped (read-only); object arrays (``np.save`` of a dict, as
    GLMsingle writes) are unpickled with NumPy classes only; a 0-d object array gives its
    item.

    Raises
    ------
    InputMissingError
        The file cannot be read or is not a ``.npy`` file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as stream:
            dtype = _npy_dtype(stream)
            if dtype.hasobject:
                value = _NumpyOnlyUnpickler(stream).load()
        if not dtype.hasobject:
            return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError, pickle.UnpicklingError, TypeError) as err:
        raise InputMissingError(f"{path}: cannot read this .npy file ({err})") from err
    if isinstance(value, np.ndarray) and value.dtype == object and value.shape == ():
        return value.item()
    return value


def _load_mat(path: Path, names: Sequence[str]) -> dict:
    from scipy.io import loadmat

    try:
        return loadmat(path, variable_names=list(names))
    except NotImplementedError as err:  # scipy reads MATLAB files up to v7, not v7.3 (HDF5)
        raise DataError(
            f"{path}: a MATLAB v7.3 (HDF5) file, which bids_vem cannot read; save it with "
            "save(..., '-v7') or write the betas as NIfTI"
        ) from err
    except (OSError, ValueError, TypeError) as err:
        raise InputMissingError(f"{path}: cannot read this MATLAB file ({err})") from err


def read_betas_array(path: Path | str) -> np.ndarray:
    """The X x Y x Z x trials betas of a GLMsingle result file (``.npy`` or ``.mat``).

    Raises
    ------
    InputMissingError
        The file cannot be read.
    DataError
        It holds no betas, or they are not a 4-D volume (GLMsingle gives
        vertices x 1 x 1 x trials for surfaces and masked data, which have no grid here).
    """
    path = Path(path)
    if path.suffix == ".mat":
        found = _load_mat(path, _BETAS_KEYS)
    else:
        found = load_pickled_npy(path)
    if isinstance(found, dict):
        key = next((k for k in _BETAS_KEYS if k in found), None)
        if key is None:
            keys = ", ".join(str(k) for k in found if not str(k).startswith("__"))
            raise DataError(
                f"{path}: no single-trial betas ({' or '.join(_BETAS_KEYS)}); it holds {keys}"
            )
        found = found[key]
    if not isinstance(found, np.ndarray) or found.dtype.kind not in "fiu":
        raise DataError(f"{path}: the betas are not a numeric array")
    if found.ndim != 4 or found.shape[1:3] == (1, 1):
        raise DataError(
            f"{path}: betas of shape {found.shape} are not X x Y x Z x trials volumes "
            "(GLMsingle run on surfaces or masked voxels); give betas fitted on 4-D images"
        )
    return found


@dataclass(frozen=True)
class DesignInfo:
    """What GLMsingle's ``DESIGNINFO`` says of the trials of a session.

    Attributes
    ----------
    stimorder : ndarray of int
        The condition (design column) of each trial, in the order of the betas.
    numtrialrun : ndarray of int
        Trials per run, in the order the runs were given.
    source : Path
    """

    stimorder: np.ndarray
    numtrialrun: np.ndarray
    source: Path


def read_design_info(folder: Path | str) -> DesignInfo | None:
    """GLMsingle's ``DESIGNINFO.npy`` (or ``.mat``) in ``folder``; None when absent or when
    it does not hold ``stimorder`` and ``numtrialrun`` (a warning says so)."""
    folder = Path(folder)
    for path in (folder / "DESIGNINFO.npy", folder / "DESIGNINFO.mat"):
        if not path.is_file():
            continue
        names = ("stimorder", "numtrialrun")
        info = _load_mat(path, names) if path.suffix == ".mat" else load_pickled_npy(path)
        try:
            stimorder = np.asarray(info["stimorder"]).astype(np.int64).ravel()
            numtrialrun = np.asarray(info["numtrialrun"]).astype(np.int64).ravel()
        except (TypeError, KeyError, IndexError, ValueError):
            logger.warning("%s: no stimorder and numtrialrun; the trial order is not checked", path)
            return None
        return DesignInfo(stimorder, numtrialrun, path)
    return None


# --------------------------------------------------------------------------- trial order
def _run_number(run: Run) -> tuple[int, str]:
    label = run.run or ""
    return (int(label) if label.isdigit() else -1, label)


def session_trials(runs: Sequence[Run], stim_column: str) -> tuple[pd.DataFrame, list[int]]:
    """The trials of one session's runs in the order GLMsingle and NSD number them.

    Runs by run number, events by onset; an event is a trial when it names a stimulus.

    Returns
    -------
    trials : DataFrame
        ``stim_file``, ``session`` and ``run``, one row per trial.
    per_run : list of int
        Trials of each run, in run order.
    """
    frames, per_run = [], []
    for run in sorted(runs, key=_run_number):
        events = read_events(run.events, stim_column=stim_column)
        events = events[events["stim_id"].notna()].sort_values("onset", kind="stable")
        per_run.append(len(events))
        frames.append(
            pd.DataFrame({"stim_file": events["stim_id"], "session": run.session, "run": run.run})
        )
    return pd.concat(frames, ignore_index=True), per_run


def check_trial_order(
    trials: pd.DataFrame, per_run: Sequence[int], design: DesignInfo, betas: Path
) -> None:
    """Check trials derived from events against GLMsingle's ``DESIGNINFO``.

    Raises
    ------
    DataError
        Other trial counts per run, or a condition shown as two stimuli (or a stimulus as
        two conditions): the runs given to GLMsingle were others, or in another order.
    """
    remedy = f"put a {_table_name(betas)} beside {betas.name} naming the stimulus of each volume"
    if list(design.numtrialrun) != list(per_run):
        raise DataError(
            f"{design.source}: GLMsingle's trials per run ({', '.join(map(str, design.numtrialrun))}) "
            f"differ from the stimulus events of these runs ({', '.join(map(str, per_run))}); "
            + remedy
        )
    pairs = pd.DataFrame({"condition": design.stimorder, "stim": trials["stim_file"].to_numpy()})
    for left, right in (("condition", "stim"), ("stim", "condition")):
        counts = pairs.groupby(left)[right].nunique()
        if (counts > 1).any():
            first = counts[counts > 1].index[0]
            shown = sorted(map(str, pairs.loc[pairs[left] == first, right].unique()))[:3]
            raise DataError(
                f"{design.source}: {left} {first} is {', '.join(shown)} by the events: "
                f"the trial order of the betas is not that of the events; {remedy}"
            )


def _table_name(betas: Path) -> str:
    name = betas.name
    for suffix in (".nii.gz", ".nii", ".npy", ".mat"):
        name = name.removesuffix(suffix)
    return name + ".tsv"


# --------------------------------------------------------------------------- discovery
def _session_key(parts: Sequence[str]) -> str | None:
    for part in reversed(parts):
        if found := re.search(r"(?:^|_)ses-([A-Za-z0-9]+)", part):
            return found.group(1)
        if found := _NSD_SESSION.match(part) or re.fullmatch(r"session(\d+)", part):
            return found.group(1)
    return None


def _same_session(key: str | None, label: str | None) -> bool:
    if key is None or label is None:
        return key is None and label is None
    if key == label:
        return True
    # NSD's betas_session01 is session nsd01 of a BIDS conversion
    digits = re.search(r"(\d+)$", label)
    return bool(digits and key.isdigit() and int(digits.group(1)) == int(key))


def _names_subject(parts: Sequence[str], subject: str) -> bool:
    return any(
        part in (f"sub-{subject}", f"subj{subject}") or part.startswith(f"sub-{subject}_")
        for part in parts
    )


def _in_space(parts: Sequence[str], space: str | None) -> bool:
    if not space:
        return False
    return (
        any(
            part == f"space-{space}" or (len(part) >= 3 and space.startswith(part))
            for part in parts[:-1]
        )
        or f"_space-{space}_" in parts[-1]
    )


def _rank(path: Path) -> int:
    stem = path.name.partition(".")[0]
    return GLMSINGLE_RESULTS.index(stem) if stem in GLMSINGLE_RESULTS else len(GLMSINGLE_RESULTS)


def find_session_betas(
    folder: Path, runs: Sequence[Run], space: str | None = None
) -> dict[str | None, Path]:
    """The session betas file of each session of ``runs`` under ``folder``.

    A file belongs to a participant when a folder or its name says ``sub-<label>`` (NSD:
    ``subj<label>``), to a session when it says ``ses-<label>`` or ``session<NN>`` (NN
    compared as a number with the label's trailing digits: NSD's ``betas_session01`` is
    ``ses-nsd01``). Among several: those in a folder named after ``space``, then
    GLMsingle's final type first.

    Returns
    -------
    dict
        Session label (None for runs without sessions) to file; empty when the participant
        has none at all.

    Raises
    ------
    InputMissingError
        Some sessions have a file and others none, or a session has several of one kind.
    """
    subject = runs[0].subject
    candidates = []
    for path in sorted(folder.rglob("*")):
        if not is_session_betas(path) or not path.is_file():
            continue
        parts = path.relative_to(folder).parts
        if _names_subject(parts, subject):
            candidates.append((path, parts))
    if not candidates:
        return {}
    found: dict[str | None, Path] = {}
    for session in sorted({run.session for run in runs}, key=lambda s: s or ""):
        mine = [
            (p, parts) for p, parts in candidates if _same_session(_session_key(parts), session)
        ]
        in_space = [(p, parts) for p, parts in mine if _in_space(parts, space)]
        mine = in_space or mine
        best = [p for p, _ in mine if _rank(p) == min(_rank(q) for q, _ in mine)]
        where = f"sub-{subject}" + (f" ses-{session}" if session else "")
        if len(best) != 1:
            listed = ", ".join(str(p.relative_to(folder)) for p in best[:3])
            raise InputMissingError(
                f"{option_name('betas')} {folder}: "
                + (f"no session betas for {where}" if not best else f"{where} has {listed}")
                + f"; give one GLMsingle folder ({GLMSINGLE_RESULTS[0]}.npy) or "
                "betas_sessionNN.nii.gz per session"
            )
        found[session] = best[0]
    return found


def session_betas_tables(
    folder: Path,
    runs: Sequence[Run],
    stim_column: str,
    work_dir: Path,
    space: str | None = None,
) -> tuple[tuple[Path, Path], ...]:
    """Each session's betas file with the table naming its volumes' stimuli.

    The table beside the file when there is one, else one written to ``work_dir/betas``
    from the events (:func:`session_trials`), checked against ``DESIGNINFO``
    (:func:`check_trial_order`) and, for NIfTI images, against their number of volumes.

    Returns
    -------
    tuple of (betas, table)
        In session order; empty when ``folder`` holds no session betas of the participant.
    """
    pairs = []
    for session, betas in find_session_betas(folder, runs, space).items():
        beside = betas.with_name(_table_name(betas))
        if beside.is_file():
            pairs.append((betas, beside))
            continue
        trials, per_run = session_trials([r for r in runs if r.session == session], stim_column)
        design = read_design_info(betas.parent) if betas.suffix in (".npy", ".mat") else None
        if design is not None:
            check_trial_order(trials, per_run, design, betas)
        else:
            _check_header(betas, len(trials), runs[0])
        entities = f"sub-{runs[0].subject}" + (f"_ses-{session}" if session else "")
        table = work_dir / "betas" / f"{entities}_task-{runs[0].task}_{_table_name(betas)}"
        table.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(table) as tmp:
            trials.to_csv(tmp, sep="\t", index=False, na_rep="n/a")
        logger.info(
            "%s: its %d volumes are the stimulus trials of %d run(s) in order%s",
            betas,
            len(trials),
            len(per_run),
            f" (checked against {design.source.name})" if design else "",
        )
        pairs.append((betas, table))
    return tuple(pairs)


def _check_header(betas: Path, n_trials: int, run: Run) -> None:
    """Volumes against trials and the grid against the BOLD's, where the file says them
    without being read whole (NIfTI headers, plain ``.npy`` arrays; GLMsingle's pickles are
    checked as they are read)."""
    import nibabel as nib

    affine = None
    if betas.suffix == ".mat" or (betas.suffix == ".npy" and not _plain_npy(betas)):
        return
    if betas.suffix == ".npy":
        shape = load_pickled_npy(betas).shape
    else:
        try:
            img = nib.load(betas)
        except Exception as err:  # nibabel raises several types for non-images
            raise InputMissingError(f"{betas}: cannot read betas image ({err})") from err
        shape, affine = img.shape, img.affine
    n_volumes = shape[3] if len(shape) == 4 else 1
    if n_volumes != n_trials:
        raise DataError(
            f"{betas}: {n_volumes} volumes but the events of its session name {n_trials} "
            f"stimulus trials; put a {_table_name(betas)} beside it naming the stimulus of "
            "each volume"
        )
    bold = nib.load(run.bold)
    if tuple(shape[:3]) != bold.shape[:3] or (
        affine is not None and not np.allclose(affine, bold.affine, atol=1e-3)
    ):
        raise DataError(
            f"{betas}: betas grid {tuple(shape[:3])} is not that of the {run.space} BOLD "
            f"{bold.shape[:3]} (shape or affine); give betas estimated from that BOLD"
        )


def _plain_npy(path: Path) -> bool:
    try:
        with open(path, "rb") as stream:
            return not _npy_dtype(stream).hasobject
    except (OSError, ValueError) as err:
        raise InputMissingError(f"{path}: cannot read this .npy file ({err})") from err
