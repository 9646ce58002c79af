# Longer than 500 lines: one nipype interface per step; each is small, there are seven.
"""nipype interfaces: each calls one core function and passes files between steps.

Inputs that decide a result are traits nipype hashes (small files by content, see
``hash_method = content`` in the workflow config), so a rerun with the same inputs is
served from the work directory. Interfaces that write into OUTPUT_DIR always run: the
outputs are cheap to write and must reappear if a user deletes them.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

logger = logging.getLogger(__name__)

__all__ = [
    "AlignImageEncoder",
    "CaptionImages",
    "DecodeCaptions",
    "EmbedCorpus",
    "ExtractFeatures",
    "FitEncoding",
    "FitJoint",
    "PrepareBold",
    "RepresentationalSimilarity",
    "WriteParticipantOutputs",
    "WriteDatasetOutputs",
]


class _StepInputSpec(BaseInterfaceInputSpec):
    """What every computing step takes from the execution settings."""

    device = traits.Str(mandatory=True, desc="torch device as given (auto, cpu, cuda:N)")
    random_seed = traits.Int(mandatory=True)
    omp_nthreads = traits.Int(mandatory=True, nohash=True, desc="threads of this step")


def _set_threads_and_seed(n_threads: int, seed: int) -> None:
    """Each step runs in its own process under MultiProc: set threads and torch's seed there.

    (bids_vem never draws from numpy's global generator; core functions take seeds.)
    """
    import torch

    torch.set_num_threads(max(1, int(n_threads)))
    torch.manual_seed(seed)


# --------------------------------------------------------------------------- features
class _ExtractFeaturesInputSpec(_StepInputSpec):
    spec = traits.Str(mandatory=True, desc="feature-space spec as the user gave it")
    modality = traits.Enum("text", "image", mandatory=True)
    stimulus_table = File(exists=True, mandatory=True, desc="stimulus table TSV (content hashes)")
    captions = traits.List(
        File(exists=True),
        desc="captions JSON files {stim_id: [captions]}; for each stimulus the first file that has it wins",
    )
    features = traits.Str(mandatory=True, desc="FeatureSettings JSON")
    model_dirs = traits.List(traits.Str, desc="folders searched for weights")
    allow_downloads = traits.Bool(False, usedefault=True, nohash=True)
    cache_dir = traits.Str("", usedefault=True, desc="feature cache ('' = no cache)")
    batch_size = traits.Int(32, usedefault=True)
    num_workers = traits.Int(0, usedefault=True, nohash=True, desc="image-decoding processes")
    stim_ids = traits.List(traits.Str, desc="the stimuli this spec embeds (default: all)")


class _ExtractFeaturesOutputSpec(TraitedSpec):
    feature_sets = traits.List(File(exists=True), desc="FeatureSet .npz files, one per layer")
    computed_at = traits.Float(desc="when this step last computed (epoch seconds)")


class ExtractFeatures(SimpleInterface):
    """Features of one model spec for every stimulus (``features.extract_feature_spaces``).

    A ``#layers`` spec gives one feature set per layer from one model load.
    """

    input_spec = _ExtractFeaturesInputSpec
    output_spec = _ExtractFeaturesOutputSpec

    def _run_interface(self, runtime):
        from bids_vem.config import FeatureSettings
        from bids_vem.encoding.device import resolve_device
        from bids_vem.features.extract import extract_feature_spaces
        from bids_vem.features.feature_set import save_feature_set
        from bids_vem.features.specs import parse_feature_space
        from bids_vem.inputs.stimuli import StimulusTable

        _set_threads_and_seed(self.inputs.omp_nthreads, self.inputs.random_seed)
        settings = FeatureSettings.from_json(self.inputs.features)
        spec = parse_feature_space(self.inputs.spec, self.inputs.modality)
        table = StimulusTable.from_tsv(Path(self.inputs.stimulus_table))
        captions = _read_captions(self.inputs.captions) if self.inputs.captions else None
        feature_sets = extract_feature_spaces(
            spec,
            self.inputs.stim_ids or table.stim_ids,
            image_paths={s.stim_id: s.path for s in table},
            image_sha256={s.stim_id: s.sha256 for s in table},
            captions=captions,
            model_dirs=[Path(p) for p in self.inputs.model_dirs],
            cache_dir=Path(self.inputs.cache_dir) if self.inputs.cache_dir else None,
            device=str(resolve_device(self.inputs.device)),
            batch_size=self.inputs.batch_size,
            allow_downloads=self.inputs.allow_downloads,
            frame_rate=settings.frame_rate,
            num_workers=self.inputs.num_workers,
            context_words=settings.context_words,
            context=settings.context,
        )
        paths = []
        for feature_set in feature_sets:
            paths.append(Path(runtime.cwd) / f"features_{feature_set.name}.npz")
            save_feature_set(feature_set, paths[-1])
        self._results["feature_sets"] = [str(p) for p in paths]
        self._results["computed_at"] = time.time()
        return runtime


# --------------------------------------------------------------------------- captioning
class _CaptionImagesInputSpec(_StepInputSpec):
    name = traits.Str(mandatory=True, desc="captioner name (desc- of the captions file)")
    spec = traits.Str(mandatory=True, desc="captioner spec as the user gave it")
    model_path = traits.Str(mandatory=True, desc="resolved transformers folder")
    stimulus_table = File(exists=True, mandatory=True)
    stim_ids = traits.List(traits.Str, mandatory=True, desc="stimuli to caption")
    captioning = traits.Str(mandatory=True, desc="CaptioningSettings JSON")
    batch_size = traits.Int(8, usedefault=True)


class _CaptionImagesOutputSpec(TraitedSpec):
    captions = File(exists=True, desc="captions JSON {stim_id: [captions]}")
    captions_tsv = File(exists=True, desc="desc-<name>_captions.tsv (+ .json sidecar beside it)")
    computed_at = traits.Float()


class CaptionImages(SimpleInterface):
    """Caption stimulus images with a vision-language model (``features.captioning``)."""

    input_spec = _CaptionImagesInputSpec
    output_spec = _CaptionImagesOutputSpec

    def _run_interface(self, runtime):
        from bids_vem.config import CaptioningSettings
        from bids_vem.encoding.device import resolve_device
        from bids_vem.features.captioning import (
            DEFAULT_PROMPT,
            Captioner,
            CaptionSettings,
            write_captions_tsv,
        )
        from bids_vem.inputs.stimuli import StimulusTable
        from bids_vem.outputs.names import derivative_name

        _set_threads_and_seed(self.inputs.omp_nthreads, self.inputs.random_seed)
        table = StimulusTable.from_tsv(Path(self.inputs.stimulus_table))
        captioning = CaptioningSettings.from_json(self.inputs.captioning)
        settings = CaptionSettings(
            prompt=captioning.caption_prompt or DEFAULT_PROMPT,
            max_new_tokens=captioning.caption_max_tokens,
            captions_per_image=captioning.captions_per_image,
            batch_size=self.inputs.batch_size,
            seed=self.inputs.random_seed,
        )
        device = str(resolve_device(self.inputs.device))
        captioner = Captioner.from_pretrained(Path(self.inputs.model_path), device=device)
        stim_ids = list(self.inputs.stim_ids)
        logger.info("captioning %d images with %s", len(stim_ids), self.inputs.spec)
        texts = captioner.caption_files([table[s].path for s in stim_ids], settings)
        captions = dict(zip(stim_ids, texts, strict=True))
        out = Path(runtime.cwd) / "captions.json"
        out.write_text(json.dumps(captions, indent=0, sort_keys=True))
        tsv = write_captions_tsv(
            Path(runtime.cwd) / derivative_name({"desc": self.inputs.name}, "captions", ".tsv"),
            captions,
            model_spec=self.inputs.spec,
            settings=settings,
            captioner=captioner,
        )
        self._results["captions"] = str(out)
        self._results["captions_tsv"] = str(tsv)
        self._results["computed_at"] = time.time()
        return runtime


# --------------------------------------------------------------------------- alignment
def _read_captions(files) -> dict[str, list[str]]:
    """Captions JSON files {stim_id: [captions]}: for each stimulus the first file with it wins."""
    captions: dict[str, list[str]] = {}
    for path in files or ():
        for stim_id, texts in json.loads(Path(path).read_text()).items():
            texts = [text for text in texts if text.strip()]  # a VLM may say nothing
            if texts:
                captions.setdefault(stim_id, texts)
    return captions


class _AlignImageEncoderInputSpec(_StepInputSpec):
    name = traits.Str(mandatory=True, desc="name of the aligned feature space")
    base_spec = traits.Str(mandatory=True, desc="open_clip image feature space to align")
    target_spec = traits.Str(mandatory=True, desc="text feature space of the caption targets")
    stimulus_table = File(exists=True, mandatory=True)
    captions = traits.List(File(exists=True), desc="captions JSON files, as ExtractFeatures")
    folds = File(exists=True, mandatory=True, desc="JSON list of AlignmentFold dicts")
    corpus = traits.Str("", usedefault=True, desc="image-caption corpus folder ('' = stimuli)")
    alignment = traits.Str(mandatory=True, desc="AlignmentSettings JSON")
    group = traits.Str(mandatory=True, desc="run group, recorded in the model and its summary")
    model_dirs = traits.List(traits.Str)
    cache_root = traits.Str(mandatory=True, desc="work folder of alignments", nohash=True)
    feature_cache_dir = traits.Str("", usedefault=True, nohash=True)
    use_gpu = traits.Bool(
        False, usedefault=True, nohash=True, desc="MultiProc: takes a GPU slot (n_gpu_procs)"
    )
    allow_downloads = traits.Bool(False, usedefault=True, nohash=True)


class _AlignImageEncoderOutputSpec(TraitedSpec):
    model_dir = traits.Str(desc="the final aligned model (open_clip local-dir + sidecar)")
    summary = File(exists=True, desc="JSON: final model folder and every fold's metrics")
    feature_set = File(exists=True, desc="features of the final model, every stimulus")
    fold_feature_sets = traits.List(File(exists=True), desc="features of each fold's model")
    fold_held_out_runs = traits.List(traits.List(traits.Str), desc="runs each fold predicts")
    fold_held_out_stimuli = traits.List(
        traits.List(traits.Str), desc="stimuli each fold predicts (stimulus folds)"
    )
    computed_at = traits.Float()


class AlignImageEncoder(SimpleInterface):
    """LLM-VEM alignment of one run group (``alignment.stage.align_run_group``); asks for the GPU."""

    input_spec = _AlignImageEncoderInputSpec
    output_spec = _AlignImageEncoderOutputSpec

    def _run_interface(self, runtime):
        from bids_vem.alignment.folds import AlignmentFold
        from bids_vem.alignment.stage import (
            align_run_group,
            alignment_summary,
            read_alignment_corpus,
        )
        from bids_vem.alignment.train import AlignConfig
        from bids_vem.config import AlignmentSettings
        from bids_vem.encoding.device import resolve_device
        from bids_vem.features.feature_set import save_feature_set
        from bids_vem.features.specs import parse_feature_space
        from bids_vem.inputs.stimuli import StimulusTable

        _set_threads_and_seed(self.inputs.omp_nthreads, self.inputs.random_seed)
        device = str(resolve_device(self.inputs.device))
        settings = AlignmentSettings.from_json(self.inputs.alignment)
        config = AlignConfig(
            **settings.train_settings(), seed=self.inputs.random_seed, device=device
        )
        folds = [
            AlignmentFold.from_dict(d) for d in json.loads(Path(self.inputs.folds).read_text())
        ]
        corpus = read_alignment_corpus(Path(self.inputs.corpus)) if self.inputs.corpus else None
        model_dir, fold_sets = align_run_group(
            parse_feature_space(self.inputs.base_spec, "image"),
            parse_feature_space(self.inputs.target_spec, "text"),
            name=self.inputs.name,
            stimuli=StimulusTable.from_tsv(Path(self.inputs.stimulus_table)),
            captions=_read_captions(self.inputs.captions),
            folds=folds,
            config=config,
            cache_root=Path(self.inputs.cache_root),
            corpus=corpus,
            feature_cache_dir=Path(self.inputs.feature_cache_dir)
            if self.inputs.feature_cache_dir
            else None,
            model_dirs=[Path(p) for p in self.inputs.model_dirs],
            allow_downloads=self.inputs.allow_downloads,
            provenance={"RunGroup": self.inputs.group},
        )
        paths = []
        for fold, feature_set in fold_sets:
            paths.append(Path(runtime.cwd) / f"features_{self.inputs.name}_{fold.name}.npz")
            save_feature_set(feature_set, paths[-1])
        summary = Path(runtime.cwd) / "alignment_summary.json"
        summary.write_text(
            json.dumps(
                alignment_summary(model_dir, fold_sets) | {"run_group": self.inputs.group},
                indent=1,
            )
        )
        self._results["summary"] = str(summary)
        self._results["model_dir"] = str(model_dir)
        self._results["feature_set"] = str(paths[-1])
        self._results["fold_feature_sets"] = [str(p) for p in paths[:-1]]
        self._results["fold_held_out_runs"] = [list(f.held_out_runs) for f, _ in fold_sets[:-1]]
        self._results["fold_held_out_stimuli"] = [
            list(f.held_out_ids) if not f.held_out_runs else [] for f, _ in fold_sets[:-1]
        ]
        self._results["computed_at"] = time.time()
        return runtime


# --------------------------------------------------------------------------- encoding
class _PrepareBoldInputSpec(BaseInterfaceInputSpec):
    runs = File(exists=True, mandatory=True, desc="JSON list of Run dicts (with file fingerprints)")
    confounds = traits.List(traits.Str, desc="confound columns regressed out")
    high_pass = traits.Float(0.0, usedefault=True, desc="cosine high-pass cutoff (Hz)")
    omp_nthreads = traits.Int(mandatory=True, nohash=True)


class _PrepareBoldOutputSpec(TraitedSpec):
    store = File(exists=True, desc="voxel store header (JSON; the float32 data lie beside it)")
    computed_at = traits.Float()


class PrepareBold(SimpleInterface):
    """Clean a run group's BOLD once into a float32 voxel store (``encoding.bold.write_bold_store``).

    Every feature space's encoding model of the group streams voxel chunks from it.
    """

    input_spec = _PrepareBoldInputSpec
    output_spec = _PrepareBoldOutputSpec

    def _run_interface(self, runtime):
        from bids_vem.encoding.bold import write_bold_store
        from bids_vem.encoding.device import limit_threads
        from bids_vem.inputs.runs import Run

        runs = [
            Run.from_dict(item["run"]) for item in json.loads(Path(self.inputs.runs).read_text())
        ]
        with limit_threads(self.inputs.omp_nthreads):
            store = write_bold_store(
                runs,
                tuple(self.inputs.confounds),
                Path(runtime.cwd) / "bold.json",
                self.inputs.high_pass,
            )
        self._results["store"] = str(store.header_path)
        self._results["computed_at"] = time.time()
        return runtime


class _FitEncodingInputSpec(_StepInputSpec):
    runs = File(exists=True, mandatory=True, desc="JSON list of Run dicts (with file fingerprints)")
    feature_set = File(exists=True, mandatory=True)
    fold_feature_sets = traits.List(
        File(exists=True), desc="features that predict some runs (an alignment that held them out)"
    )
    fold_held_out_runs = traits.List(traits.List(traits.Str), desc="the runs of each fold")
    fold_held_out_stimuli = traits.List(
        traits.List(traits.Str), desc="the stimuli of each fold (stimulus folds)"
    )
    run_group = traits.Str(mandatory=True, desc="the run group's name (sub-XX[_ses-YY]_task-ZZ)")
    feature_space = traits.Str(mandatory=True, desc="the feature space's name")
    stim_column = traits.Str(mandatory=True, desc="events column naming the stimulus")
    evaluation = traits.Str(mandatory=True, desc="EvaluationSettings JSON")
    save_weights = traits.Bool(False, usedefault=True)
    bold_store = File(exists=True, desc="voxel store header from PrepareBold (else cleaned here)")
    betas = traits.List(
        File(exists=True),
        desc="user's trial betas: one image, or one per run or session (GLMsingle)",
    )
    betas_tables = traits.List(
        File(exists=True), desc="the table naming the stimulus of each volume of each image"
    )
    mem_mb = traits.Int(0, usedefault=True, nohash=True, desc="memory budget (0: default chunks)")


class _FitEncodingOutputSpec(TraitedSpec):
    fit = File(exists=True, desc="FitRecord JSON: run group, feature space, result and weights")
    computed_at = traits.Float()


class FitEncoding(SimpleInterface):
    """Voxelwise ridge encoding model of one run group on one feature space (``encoding.model``)."""

    input_spec = _FitEncodingInputSpec
    output_spec = _FitEncodingOutputSpec

    def _run_interface(self, runtime):
        from bids_vem.config import EvaluationSettings
        from bids_vem.encoding.device import limit_threads, resolve_device
        from bids_vem.encoding.model import encode_runs
        from bids_vem.encoding.voxel_data import VoxelStore
        from bids_vem.features.feature_set import load_feature_set
        from bids_vem.inputs.runs import Run

        _set_threads_and_seed(self.inputs.omp_nthreads, self.inputs.random_seed)
        settings = EvaluationSettings.from_json(self.inputs.evaluation)
        runs = [
            Run.from_dict(item["run"]) for item in json.loads(Path(self.inputs.runs).read_text())
        ]
        store = VoxelStore(Path(self.inputs.bold_store)) if self.inputs.bold_store else None
        weights = Path(runtime.cwd) / "weights.npy" if self.inputs.save_weights else None
        feature_set = load_feature_set(Path(self.inputs.feature_set))
        fold_feature_sets, stimulus_fold_feature_sets = [], []
        held_stimuli = self.inputs.fold_held_out_stimuli or [[]] * len(
            self.inputs.fold_feature_sets or []
        )
        for held_out, stimuli, path in zip(
            self.inputs.fold_held_out_runs or [],
            held_stimuli,
            self.inputs.fold_feature_sets or [],
            strict=True,
        ):
            if held_out:
                fold_feature_sets.append((tuple(held_out), load_feature_set(Path(path))))
            else:
                stimulus_fold_feature_sets.append((tuple(stimuli), load_feature_set(Path(path))))
        if settings.design == "trialwise":
            from bids_vem.encoding.bold import runs_mask
            from bids_vem.encoding.trialwise import encode_trials

            betas = [Path(b) for b in self.inputs.betas or []]
            with limit_threads(self.inputs.omp_nthreads):
                result = encode_trials(
                    betas or runs,
                    feature_set,
                    alphas=settings.alphas,
                    hrf_model=settings.hrf_model,
                    confounds=settings.confounds,
                    device=str(resolve_device(self.inputs.device)),
                    stim_column=self.inputs.stim_column,
                    cv_groups=settings.cv_groups,
                    mask=runs_mask(runs) if betas else None,
                    betas_tables=[Path(t) for t in self.inputs.betas_tables or []] or None,
                    mem_mb=self.inputs.mem_mb or None,
                    weights_path=weights,
                )
        else:
            with limit_threads(self.inputs.omp_nthreads):
                result = encode_runs(
                    runs,
                    feature_set,
                    fold_feature_sets=fold_feature_sets,
                    stim_column=self.inputs.stim_column,
                    delays=settings.delays,
                    alphas=settings.alphas,
                    confounds=settings.confounds,
                    device=str(resolve_device(self.inputs.device)),
                    bold=store,
                    test_runs=settings.test_runs,
                    average_test_repeats=settings.average_test_repeats,
                    cv_groups=settings.cv_groups,
                    mem_mb=self.inputs.mem_mb or None,
                    weights_path=weights,
                    test_stimuli=settings.test_stimuli,
                    n_permutations=settings.permutations,
                    high_pass=settings.high_pass,
                    delays_seconds=settings.delays_seconds,
                    stimulus_fold_feature_sets=stimulus_fold_feature_sets,
                    seed=self.inputs.random_seed,
                    confound_regression=settings.confound_regression,
                    word_rate=settings.word_rate,
                )
        from bids_vem.workflows.contracts import FitRecord

        out = Path(runtime.cwd) / "encoding_result.npz"
        result.save(out)
        record = FitRecord(self.inputs.run_group, self.inputs.feature_space, out, weights)
        self._results["fit"] = str(record.write(Path(runtime.cwd) / "fit.json"))
        self._results["computed_at"] = time.time()
        return runtime


def _group_inputs(inputs):
    """The evaluation settings and the runs of a run-group step."""
    from bids_vem.config import EvaluationSettings
    from bids_vem.inputs.runs import Run

    runs = [Run.from_dict(item["run"]) for item in json.loads(Path(inputs.runs).read_text())]
    return EvaluationSettings.from_json(inputs.evaluation), runs


def _trial_options(inputs, settings, runs) -> tuple[list, dict]:
    """What single trials are read or estimated from (the user's betas, else the runs) and
    the options of :func:`bids_vem.encoding.trialwise.load_trial_betas`."""
    from bids_vem.encoding.bold import runs_mask

    betas = [Path(b) for b in inputs.betas or []]
    return betas or runs, {
        "stim_column": inputs.stim_column,
        "hrf_model": settings.hrf_model,
        "confounds": settings.confounds,
        "mask": runs_mask(runs) if betas else None,
        "betas_tables": [Path(t) for t in inputs.betas_tables or []] or None,
    }


class _FitJointInputSpec(_StepInputSpec):
    runs = File(exists=True, mandatory=True, desc="JSON list of Run dicts (with file fingerprints)")
    feature_sets = traits.List(File(exists=True), mandatory=True, desc="one per band, in order")
    run_group = traits.Str(mandatory=True)
    name = traits.Str(mandatory=True, desc="the joint model's name (its spaces joined by And)")
    stim_column = traits.Str(mandatory=True)
    evaluation = traits.Str(mandatory=True, desc="EvaluationSettings JSON")
    n_iterations = traits.Int(mandatory=True, desc="band-weight samples of the random search")
    bold_store = File(exists=True, desc="voxel store header from PrepareBold (else cleaned here)")
    betas = traits.List(File(exists=True), desc="user's trial betas (as FitEncoding)")
    betas_tables = traits.List(File(exists=True))
    mem_mb = traits.Int(0, usedefault=True, nohash=True)


class FitJoint(SimpleInterface):
    """Banded ridge of one run group over several feature spaces, with variance partitioning
    (``encoding.banded``)."""

    input_spec = _FitJointInputSpec
    output_spec = _FitEncodingOutputSpec

    def _run_interface(self, runtime):
        from bids_vem.encoding.banded import encode_joint_runs, encode_joint_trials
        from bids_vem.encoding.device import limit_threads, resolve_device
        from bids_vem.encoding.voxel_data import VoxelStore
        from bids_vem.features.feature_set import load_feature_set
        from bids_vem.workflows.contracts import FitRecord

        _set_threads_and_seed(self.inputs.omp_nthreads, self.inputs.random_seed)
        settings, runs = _group_inputs(self.inputs)
        feature_sets = [load_feature_set(Path(p)) for p in self.inputs.feature_sets]
        common = dict(
            alphas=settings.alphas,
            cv_groups=settings.cv_groups,
            n_iterations=self.inputs.n_iterations,
            seed=self.inputs.random_seed,
            device=str(resolve_device(self.inputs.device)),
            mem_mb=self.inputs.mem_mb or None,
        )
        with limit_threads(self.inputs.omp_nthreads):
            if settings.design == "trialwise":
                if settings.test_runs:
                    logger.warning(
                        "%s: the joint model of single trials does not hold the test runs "
                        "out yet; it is evaluated by nested CV over all runs (the single "
                        "spaces' maps hold them out)",
                        self.inputs.name,
                    )
                source, options = _trial_options(self.inputs, settings, runs)
                result = encode_joint_trials(source, feature_sets, **common, **options)
            else:
                store = VoxelStore(Path(self.inputs.bold_store)) if self.inputs.bold_store else None
                result = encode_joint_runs(
                    runs, feature_sets, **common, stim_column=self.inputs.stim_column,
                    delays=settings.delays, delays_seconds=settings.delays_seconds,
                    confounds=settings.confounds, high_pass=settings.high_pass, bold=store,
                    confound_regression=settings.confound_regression,
                    word_rate=settings.word_rate, test_runs=settings.test_runs,
                )  # fmt: skip
        out = Path(runtime.cwd) / "joint_result.npz"
        result.save(out)
        record = FitRecord(self.inputs.run_group, self.inputs.name, out)
        self._results["fit"] = str(record.write(Path(runtime.cwd) / "fit.json"))
        self._results["computed_at"] = time.time()
        return runtime


class _EmbedCorpusInputSpec(_StepInputSpec):
    corpus = File(exists=True, mandatory=True, desc="--decode-corpus (its content is hashed)")
    spec = traits.Str(mandatory=True, desc="the text feature space's spec")
    name = traits.Str(mandatory=True, desc="the text feature space (one layer of the spec)")
    model_dirs = traits.List(traits.Str)
    cache_dir = traits.Str("", usedefault=True, nohash=True)
    allow_downloads = traits.Bool(False, usedefault=True)


class _EmbedCorpusOutputSpec(TraitedSpec):
    feature_set = File(exists=True, desc="the corpus captions embedded, in file order")


class EmbedCorpus(SimpleInterface):
    """The decoding corpus embedded by one text feature space, once for every run group."""

    input_spec = _EmbedCorpusInputSpec
    output_spec = _EmbedCorpusOutputSpec

    def _run_interface(self, runtime):
        from bids_vem.encoding.device import resolve_device
        from bids_vem.features.extract import extract_feature_spaces
        from bids_vem.features.feature_set import save_feature_set
        from bids_vem.features.specs import parse_feature_space
        from bids_vem.inputs.captions import read_caption_corpus

        _set_threads_and_seed(self.inputs.omp_nthreads, self.inputs.random_seed)
        texts = read_caption_corpus(Path(self.inputs.corpus))
        ids = [f"corpus{i:08d}" for i in range(len(texts))]
        spaces = extract_feature_spaces(
            parse_feature_space(self.inputs.spec, "text"), ids,
            captions={i: [t] for i, t in zip(ids, texts, strict=True)},
            model_dirs=[Path(p) for p in self.inputs.model_dirs or []],
            cache_dir=Path(self.inputs.cache_dir) if self.inputs.cache_dir else None,
            device=str(resolve_device(self.inputs.device)),
            allow_downloads=self.inputs.allow_downloads,
        )  # fmt: skip
        chosen = next((fs for fs in spaces if fs.name == self.inputs.name), spaces[0])
        out = save_feature_set(chosen, Path(runtime.cwd) / "corpus_features.npz")
        self._results["feature_set"] = str(out)
        return runtime


class _FitFeatureMapsInputSpec(_StepInputSpec):
    corpus = traits.Str(mandatory=True, desc="--transfer-corpus folder")
    text_spec = traits.Str(mandatory=True, desc="the text feature space's spec")
    image_spec = traits.Str(mandatory=True, desc="the image feature space's spec")
    model_dirs = traits.List(traits.Str)
    cache_dir = traits.Str("", usedefault=True, nohash=True)
    allow_downloads = traits.Bool(False, usedefault=True)


class _FitFeatureMapsOutputSpec(TraitedSpec):
    text_to_image = File(exists=True, desc="FeatureMap .npz: text space -> image space")
    image_to_text = File(exists=True, desc="FeatureMap .npz: image space -> text space")


class FitFeatureMaps(SimpleInterface):
    """Linear maps both ways between a text and an image feature space, fitted on the
    ``--transfer`` corpus's images and captions (``analysis.transfer.fit_feature_map``)."""

    input_spec = _FitFeatureMapsInputSpec
    output_spec = _FitFeatureMapsOutputSpec

    def _run_interface(self, runtime):
        from bids_vem.alignment.stage import read_alignment_corpus
        from bids_vem.analysis.transfer import fit_feature_map
        from bids_vem.encoding.device import resolve_device
        from bids_vem.features.extract import extract_feature_spaces
        from bids_vem.features.specs import parse_feature_space

        _set_threads_and_seed(self.inputs.omp_nthreads, self.inputs.random_seed)
        corpus = read_alignment_corpus(Path(self.inputs.corpus), "transfer_corpus")
        common = dict(
            model_dirs=[Path(p) for p in self.inputs.model_dirs or []],
            cache_dir=Path(self.inputs.cache_dir) if self.inputs.cache_dir else None,
            device=str(resolve_device(self.inputs.device)),
            allow_downloads=self.inputs.allow_downloads,
        )
        # the mean embedding of each image's captions, and of the image
        (text,) = extract_feature_spaces(
            parse_feature_space(self.inputs.text_spec, "text"), corpus.ids,
            captions=corpus.captions, **common,
        )  # fmt: skip
        (image,) = extract_feature_spaces(
            parse_feature_space(self.inputs.image_spec, "image"), corpus.ids,
            image_paths=corpus.images, **common,
        )  # fmt: skip
        X_text, X_image = text.rows(corpus.ids), image.rows(corpus.ids)
        for output, (a, X, b, Y) in {
            "text_to_image": (text.name, X_text, image.name, X_image),
            "image_to_text": (image.name, X_image, text.name, X_text),
        }.items():
            fitted = fit_feature_map(X, Y, source=a, target=b, seed=self.inputs.random_seed)
            self._results[output] = str(fitted.save(Path(runtime.cwd) / f"{output}.npz"))
        return runtime


class _TransferInputSpec(_StepInputSpec):
    source_runs = File(exists=True, mandatory=True, desc="the source task's runs JSON")
    target_runs = File(exists=True, mandatory=True, desc="the target task's runs JSON")
    source_features = File(exists=True, mandatory=True)
    target_features = File(exists=True, mandatory=True)
    source_bold = File(exists=True, desc="the source runs' voxel store (PrepareBold)")
    target_bold = File(exists=True, desc="the target runs' voxel store (PrepareBold)")
    feature_map = File(exists=True, desc="FeatureMap .npz carrying the target features over")
    kind = traits.Enum("same", "shared", "mapped", mandatory=True)
    name = traits.Str(mandatory=True, desc="the transfer's desc- (TransferEntry.name)")
    run_group = traits.Str(mandatory=True, desc="the target run group (its maps' entities)")
    stim_column = traits.Str(mandatory=True)
    evaluation = traits.Str(mandatory=True, desc="EvaluationSettings JSON")
    n_permutations = traits.Int(mandatory=True)


class TransferEncoding(SimpleInterface):
    """A model of one task's runs scored on another task's runs (``analysis.transfer``)."""

    input_spec = _TransferInputSpec
    output_spec = _FitEncodingOutputSpec

    def _run_interface(self, runtime):
        from bids_vem.analysis.transfer import FeatureMap, transfer_runs
        from bids_vem.config import EvaluationSettings
        from bids_vem.encoding.device import limit_threads, resolve_device
        from bids_vem.encoding.voxel_data import VoxelStore
        from bids_vem.features.feature_set import load_feature_set
        from bids_vem.inputs.runs import Run
        from bids_vem.workflows.contracts import FitRecord

        _set_threads_and_seed(self.inputs.omp_nthreads, self.inputs.random_seed)
        settings = EvaluationSettings.from_json(self.inputs.evaluation)

        def runs(path: str) -> list:
            return [Run.from_dict(item["run"]) for item in json.loads(Path(path).read_text())]

        def store(path) -> VoxelStore | None:
            return VoxelStore(Path(path)) if isdefined(path) and path else None

        feature_map = (
            FeatureMap.load(Path(self.inputs.feature_map))
            if isdefined(self.inputs.feature_map)
            else None
        )
        with limit_threads(self.inputs.omp_nthreads):
            result = transfer_runs(
                runs(self.inputs.source_runs), runs(self.inputs.target_runs),
                load_feature_set(Path(self.inputs.source_features)),
                load_feature_set(Path(self.inputs.target_features)),
                kind=self.inputs.kind, alphas=settings.alphas, stim_column=self.inputs.stim_column,
                delays=settings.delays, delays_seconds=settings.delays_seconds,
                confounds=settings.confounds, high_pass=settings.high_pass,
                source_bold=store(self.inputs.source_bold),
                target_bold=store(self.inputs.target_bold), feature_map=feature_map,
                n_permutations=self.inputs.n_permutations, seed=self.inputs.random_seed,
                device=str(resolve_device(self.inputs.device)),
                confound_regression=settings.confound_regression, word_rate=settings.word_rate,
            )  # fmt: skip
        out = result.save(Path(runtime.cwd) / "transfer_result.npz")
        record = FitRecord(self.inputs.run_group, self.inputs.name, out)
        self._results["fit"] = str(record.write(Path(runtime.cwd) / "fit.json"))
        self._results["computed_at"] = time.time()
        return runtime


class _DecodeCaptionsInputSpec(_StepInputSpec):
    runs = File(exists=True, mandatory=True, desc="JSON list of Run dicts (with file fingerprints)")
    feature_set = File(exists=True, mandatory=True, desc="the caption embeddings decoded")
    run_group = traits.Str(mandatory=True)
    stim_column = traits.Str(mandatory=True)
    evaluation = traits.Str(mandatory=True, desc="EvaluationSettings JSON")
    corpus = File(exists=True, desc="--decode-corpus (for the texts of the best matches)")
    corpus_features = File(exists=True, desc="the corpus embedded (EmbedCorpus)")
    n_permutations = traits.Int(mandatory=True)
    betas = traits.List(File(exists=True), desc="user's trial betas (as FitEncoding)")
    betas_tables = traits.List(File(exists=True))
    captions = traits.List(File(exists=True), desc="the captions embedded (for the reports)")


class DecodeCaptions(SimpleInterface):
    """Caption decoding of one run group in one text feature space (``analysis.decoding``)."""

    input_spec = _DecodeCaptionsInputSpec
    output_spec = _FitEncodingOutputSpec

    def _run_interface(self, runtime):
        from bids_vem.analysis.decoding import decode_captions
        from bids_vem.encoding.device import limit_threads
        from bids_vem.features.feature_set import load_feature_set
        from bids_vem.workflows.contracts import FitRecord

        _set_threads_and_seed(self.inputs.omp_nthreads, self.inputs.random_seed)
        settings, runs = _group_inputs(self.inputs)
        feature_set = load_feature_set(Path(self.inputs.feature_set))
        corpus, texts = None, []
        if isdefined(self.inputs.corpus_features):
            from bids_vem.inputs.captions import read_caption_corpus

            texts = read_caption_corpus(Path(self.inputs.corpus))
            corpus = load_feature_set(Path(self.inputs.corpus_features)).values
        source, options = _trial_options(self.inputs, settings, runs)
        with limit_threads(self.inputs.omp_nthreads):
            result = decode_captions(
                source, feature_set, alphas=settings.alphas, corpus=corpus,
                n_permutations=self.inputs.n_permutations, seed=self.inputs.random_seed,
                **options,
            )  # fmt: skip
        captions = _read_captions(self.inputs.captions) if self.inputs.captions else {}
        result.captions = {s: captions[s][0] for s in result.stim_ids if captions.get(s)}
        for best in result.best:
            if best.startswith("corpus:"):
                result.captions[best] = texts[int(best.split(":")[1])]
        out = Path(runtime.cwd) / "decoding.json"
        result.save(out)
        record = FitRecord(self.inputs.run_group, feature_set.name, out)
        self._results["fit"] = str(record.write(Path(runtime.cwd) / "fit.json"))
        self._results["computed_at"] = time.time()
        return runtime


class _RSAInputSpec(_StepInputSpec):
    runs = File(exists=True, mandatory=True, desc="JSON list of Run dicts (with file fingerprints)")
    feature_sets = traits.List(File(exists=True), mandatory=True, desc="the model RDMs' features")
    run_group = traits.Str(mandatory=True)
    stim_column = traits.Str(mandatory=True)
    evaluation = traits.Str(mandatory=True, desc="EvaluationSettings JSON")
    rois = traits.List(traits.Tuple(traits.Str, File(exists=True)), desc="--roi (name, mask)")
    radius = traits.Float(mandatory=True, desc="searchlight radius in mm (0: none)")
    space = traits.Str(mandatory=True, desc="the runs' space (surfaces: the mesh)")
    n_permutations = traits.Int(mandatory=True)
    betas = traits.List(File(exists=True), desc="user's trial betas (as FitEncoding)")
    betas_tables = traits.List(File(exists=True))


class RepresentationalSimilarity(SimpleInterface):
    """RSA of one run group: brain RDMs, model RDMs, searchlight (``analysis.rsa``)."""

    input_spec = _RSAInputSpec
    output_spec = _FitEncodingOutputSpec

    def _run_interface(self, runtime):
        from bids_vem.analysis.rsa import rsa_of_run_group
        from bids_vem.encoding.device import limit_threads
        from bids_vem.features.feature_set import load_feature_set
        from bids_vem.inputs.surfaces import SurfaceGeometry, bold_kind
        from bids_vem.workflows.contracts import FitRecord

        _set_threads_and_seed(self.inputs.omp_nthreads, self.inputs.random_seed)
        settings, runs = _group_inputs(self.inputs)
        source, options = _trial_options(self.inputs, settings, runs)
        geometry = None
        if bold_kind(runs[0].bold) != "volume":
            geometry = SurfaceGeometry.of_bold(runs[0].bold, runs[0].bold_right, self.inputs.space)
        with limit_threads(self.inputs.omp_nthreads):
            result = rsa_of_run_group(
                source, [load_feature_set(Path(p)) for p in self.inputs.feature_sets],
                rois=[(name, Path(path)) for name, path in self.inputs.rois or []],
                radius=self.inputs.radius, n_permutations=self.inputs.n_permutations,
                seed=self.inputs.random_seed, geometry=geometry, **options,
            )  # fmt: skip
        out = Path(runtime.cwd) / "rsa.npz"
        result.save(out)
        record = FitRecord(self.inputs.run_group, "rsa", out)
        self._results["fit"] = str(record.write(Path(runtime.cwd) / "fit.json"))
        self._results["computed_at"] = time.time()
        return runtime


# --------------------------------------------------------------------------- outputs
class _WriteParticipantOutputsInputSpec(BaseInterfaceInputSpec):
    output_dir = traits.Str(mandatory=True)
    subject = traits.Str(mandatory=True)
    plan = File(exists=True, mandatory=True, desc="OutputPlan JSON")
    fits = traits.List(File(exists=True), desc="FitRecord JSON of each encoding step")
    aligned_models = traits.List(
        File(exists=True), desc="alignment summaries of the run groups (each names its group)"
    )
    joints = traits.List(File(exists=True), desc="FitRecord JSON of each banded ridge (--joint)")
    decodings = traits.List(File(exists=True), desc="FitRecord JSON of each decoding (--decode)")
    rsas = traits.List(File(exists=True), desc="FitRecord JSON of each run group's RSA (--rsa)")
    transfers = traits.List(File(exists=True), desc="FitRecord JSON of each --transfer step")
    after = traits.Any(desc="ordering only: the dataset files written first", nohash=True)


class _WriteParticipantOutputsOutputSpec(TraitedSpec):
    report = File(desc="sub-XX.html")
    statmaps = traits.List(traits.Str)


class WriteParticipantOutputs(SimpleInterface):
    """Stat maps, summary table and HTML report of one participant."""

    input_spec = _WriteParticipantOutputsInputSpec
    output_spec = _WriteParticipantOutputsOutputSpec
    _always_run = True

    def _run_interface(self, runtime):
        from bids_vem.workflows.contracts import FitRecord, OutputPlan
        from bids_vem.workflows.participant_outputs import write_participant_outputs

        report, statmaps = write_participant_outputs(
            Path(self.inputs.output_dir),
            self.inputs.subject,
            plan=OutputPlan.from_json(Path(self.inputs.plan).read_text()),
            fits=[FitRecord.read(Path(p)) for p in self.inputs.fits],
            alignment_summaries=[Path(p) for p in self.inputs.aligned_models or []],
            joints=[FitRecord.read(Path(p)) for p in self.inputs.joints or []],
            decodings=[FitRecord.read(Path(p)) for p in self.inputs.decodings or []],
            rsas=[FitRecord.read(Path(p)) for p in self.inputs.rsas or []],
            transfers=[FitRecord.read(Path(p)) for p in self.inputs.transfers or []],
        )
        self._results["report"] = str(report)
        self._results["statmaps"] = [str(p) for p in statmaps]
        return runtime


class _WriteDatasetOutputsInputSpec(BaseInterfaceInputSpec):
    output_dir = traits.Str(mandatory=True)
    bids_dir = traits.Str(mandatory=True)
    feature_sets = traits.List(File(exists=True))
    plan = File(exists=True, mandatory=True)
    captions_tsv = File(exists=True, desc="generated captions, copied to OUTPUT_DIR/stimuli/")
    stimulus_table = File(exists=True, desc="where each stimulus is: the features' Sources")


class _WriteDatasetOutputsOutputSpec(TraitedSpec):
    files = traits.List(traits.Str)


class WriteDatasetOutputs(SimpleInterface):
    """dataset_description.json, .bidsignore, features/ and logs/CITATION.md."""

    input_spec = _WriteDatasetOutputsInputSpec
    output_spec = _WriteDatasetOutputsOutputSpec
    _always_run = True

    def _run_interface(self, runtime):
        from bids_vem.workflows.contracts import OutputPlan
        from bids_vem.workflows.participant_outputs import write_dataset_outputs

        files = write_dataset_outputs(
            Path(self.inputs.output_dir),
            Path(self.inputs.bids_dir),
            plan=OutputPlan.from_json(Path(self.inputs.plan).read_text()),
            feature_set_files=[Path(p) for p in self.inputs.feature_sets],
            captions_tsv=Path(self.inputs.captions_tsv) if self.inputs.captions_tsv else None,
            stimulus_table=(
                Path(self.inputs.stimulus_table) if self.inputs.stimulus_table else None
            ),
        )
        self._results["files"] = [str(p) for p in files]
        return runtime
