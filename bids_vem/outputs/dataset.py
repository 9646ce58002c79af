# Longer than 500 lines: the dataset-level files (description, README, citation, run config) and their texts.
"""Dataset-level files of OUTPUT_DIR: description, .bidsignore, README, descriptions, citation, config.

Each writer is idempotent (the same call gives the same bytes) and owns only its part of a
file: keys, lines or rows others added are kept. Everything is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from bids_vem._utils import file_lock
from bids_vem.errors import OutputError, UsageError
from bids_vem.outputs.atomic import write_text_atomic
from bids_vem.outputs.jsonfile import write_json_atomic

__all__ = [
    "PIPELINE_NAME",
    "CODE_URL",
    "BIDS_VERSION",
    "BIDSIGNORE_ENTRIES",
    "REFERENCES",
    "container_from_environment",
    "source_dataset_entry",
    "write_dataset_description",
    "write_bidsignore",
    "write_readme",
    "write_descriptions",
    "methods_text",
    "cited_references",
    "write_citation",
    "new_run_id",
    "write_run_config",
]

logger = logging.getLogger(__name__)

PIPELINE_NAME = "bids_vem"
CODE_URL = "https://github.com/bids-vem/bids_vem"
#: BIDS release the outputs follow (``desc`` last: 1.11.0; logs/ folder: 1.10.1)
BIDS_VERSION = "1.10.1"

#: what the validator does not know; no trailing slash (``figures/`` would leave the folder itself flagged)
BIDSIGNORE_ENTRIES: tuple[str, ...] = (
    "work",
    "figures",
    "features",
    "models",
    "group",
    "log",
    "*.html",
    "*_statmap.*",
    "*_summary.tsv",
    "*_summary.json",
    "*_comparison.tsv",
    "*_comparison.json",
    "*_parcels.tsv",
    "*_parcels.json",
    "*_layers.tsv",
    "*_layers.json",
    "*_partition.tsv",
    "*_partition.json",
    "*_decoding.tsv",
    "*_decoding.json",
    "*_rdm.tsv",
    "*_rdm.json",
    "*_rsa.tsv",
    "*_rsa.json",
    "*_transfer.tsv",
    "*_transfer.json",
    "*.func.gii",
    "*.dscalar.nii",
)

_ACKNOWLEDGE = (
    "Please cite bids_vem (see logs/CITATION.md and logs/CITATION.bib in this dataset) "
    "and the source datasets listed in SourceDatasets."
)


def container_from_environment(environ: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """``GeneratedBy.Container`` from the variables the container images set, or None.

    ``BIDS_VEM_DOCKER_TAG`` gives ``{"Type": "docker", "Tag": ...}``;
    ``BIDS_VEM_APPTAINER_URI`` (or ``BIDS_VEM_SINGULARITY_URI``) gives
    ``{"Type": "apptainer", "URI": ...}`` (fMRIPrep habit).
    """
    env = os.environ if environ is None else environ
    if env.get("BIDS_VEM_DOCKER_TAG"):
        return {"Type": "docker", "Tag": env["BIDS_VEM_DOCKER_TAG"]}
    for key, kind in (
        ("BIDS_VEM_APPTAINER_URI", "apptainer"),
        ("BIDS_VEM_SINGULARITY_URI", "singularity"),
    ):
        if env.get(key):
            return {"Type": kind, "URI": env[key]}
    return None


def _is_uri(text: str) -> bool:
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", text)) and not re.match(
        r"^[a-zA-Z]:\\", text
    )


def _location(location: str | Path, relative_to: Path | None = None) -> str:
    """A URI as it is; a local folder as a path relative to ``relative_to`` (the derivative
    dataset: valid wherever the two folders move together, as in ``BIDS_DIR/derivatives``),
    else as a ``file://`` URI."""
    text = str(location)
    if _is_uri(text):
        return text
    path = Path(text).resolve()
    if relative_to is None:
        return path.as_uri()
    return Path(os.path.relpath(path, Path(relative_to).resolve())).as_posix()


def source_dataset_entry(source: str | Path, relative_to: Path | None = None) -> dict[str, str]:
    """One ``SourceDatasets`` item: ``URL``, and ``DOI``/``Version`` from its description.

    A local dataset gives its path relative to ``relative_to`` (else a ``file://`` URI)
    plus ``DatasetDOI`` of its ``dataset_description.json`` (``doi:`` form); an OpenNeuro
    DOI ``10.18112/openneuro.ds001499.v1.3.1`` also gives the version ``1.3.1``.
    """
    text = str(source)
    if _is_uri(text):
        if text.lower().startswith("doi:"):
            return {"DOI": text}
        return {"URL": text}
    entry: dict[str, str] = {"URL": _location(text, relative_to)}
    description = Path(text) / "dataset_description.json"
    try:
        raw = json.loads(description.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return entry
    except (OSError, ValueError) as exc:
        logger.warning("cannot read %s (%s); SourceDatasets gets its URL only", description, exc)
        return entry
    doi = str(raw.get("DatasetDOI") or "").strip()
    if doi:
        doi = re.sub(r"^(https?://(dx\.)?doi\.org/|doi:)", "", doi, flags=re.IGNORECASE)
        entry["DOI"] = f"doi:{doi}"
        match = re.search(r"\.v(\d+(?:\.\d+)*)$", doi)
        if match:
            entry["Version"] = match.group(1)
    return entry


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise OutputError(
            f"{path}: cannot read the existing file ({exc}); remove or fix it"
        ) from exc
    if not isinstance(data, dict):
        raise OutputError(f"{path}: expected a JSON object; remove or fix it")
    return data


def write_dataset_description(
    output_dir: Path | str,
    *,
    source_datasets: Sequence[str | Path],
    version: str,
    container: Mapping[str, str] | None = None,
    dataset_links: Mapping[str, str | Path] | None = None,
) -> Path:
    """Write ``OUTPUT_DIR/dataset_description.json`` of the derivative dataset.

    Parameters
    ----------
    output_dir : path
        The derivative dataset root.
    source_datasets : sequence of str or path
        Raw dataset first, then derivative inputs (fMRIPrep...): local folders or URLs/DOIs.
    version : str
        bids_vem version (``GeneratedBy[0].Version``).
    container : mapping, optional
        ``{"Type": "docker", "Tag": ...}``; see :func:`container_from_environment`.
    dataset_links : mapping, optional
        Names used in BIDS URIs (``bids:raw:...``) to locations. Default: ``raw`` is the
        first source dataset.

    Returns
    -------
    Path
        The file written.

    Notes
    -----
    Keys bids_vem does not own (``Authors``, ``License``... added by a user) and other
    ``GeneratedBy`` entries are kept; ours comes first, as BIDS requires of a dataset
    nested in ``<raw>/derivatives/<name>``, whose ``<name>`` must contain ``bids_vem``.

    Raises
    ------
    OutputError
        The existing file is unreadable or describes a raw dataset.
    """
    output_dir = Path(output_dir)
    path = output_dir / "dataset_description.json"
    existing = _read_json(path)
    if existing.get("DatasetType", "derivative") != "derivative":
        raise OutputError(
            f"{path} describes a {existing['DatasetType']!r} dataset, not bids_vem outputs; "
            "choose another output directory"
        )
    if dataset_links is None:
        dataset_links = {"raw": source_datasets[0]} if source_datasets else {}
    generated_by: dict[str, Any] = {
        "Name": PIPELINE_NAME,
        "Version": str(version),
        "CodeURL": CODE_URL,
    }
    if container:
        generated_by["Container"] = dict(container)
    others = [
        g
        for g in existing.get("GeneratedBy", [])
        if isinstance(g, dict) and g.get("Name") != PIPELINE_NAME
    ]
    description = dict(existing)
    description.update(
        {
            "Name": existing.get("Name") or "bids_vem: voxelwise encoding models",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "derivative",
            "GeneratedBy": [generated_by, *others],
            "SourceDatasets": [source_dataset_entry(s, output_dir) for s in source_datasets],
            "HowToAcknowledge": _ACKNOWLEDGE,
        }
    )
    if dataset_links:
        links = dict(existing.get("DatasetLinks", {}))
        links.update({name: _location(loc, output_dir) for name, loc in dataset_links.items()})
        description["DatasetLinks"] = links
    if output_dir.parent.name == "derivatives" and PIPELINE_NAME not in output_dir.name:
        # BIDS: the first GeneratedBy.Name must be part of the folder name under derivatives/
        logger.warning(
            "%s is nested under derivatives/ but its name lacks %r; BIDS expects "
            "derivatives/%s[-<variant>]",
            output_dir,
            PIPELINE_NAME,
            PIPELINE_NAME,
        )
    return write_json_atomic(path, description)


def write_bidsignore(output_dir: Path | str, extra: Sequence[str] = ()) -> Path:
    """Write ``OUTPUT_DIR/.bidsignore``: :data:`BIDSIGNORE_ENTRIES` + ``extra``, keeping other lines."""
    path = Path(output_dir) / ".bidsignore"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        lines = []
    for entry in (*BIDSIGNORE_ENTRIES, *extra):
        entry = entry.rstrip("/")  # a trailing slash leaves the folder itself flagged
        if entry not in lines:
            lines.append(entry)
    return write_text_atomic(path, "\n".join(lines) + "\n")


def write_readme(output_dir: Path | str) -> Path:
    """Write ``OUTPUT_DIR/README.md`` unless a README is already there (a user's edits win)."""
    output_dir = Path(output_dir)
    for existing in sorted(output_dir.glob("README*")):
        return existing
    text = (
        "# bids_vem outputs\n\n"
        "Voxelwise encoding models of fMRI from vision and language model features of the stimuli,\n"
        f"written by bids_vem ({CODE_URL}).\n\n"
        "- `sub-<label>/func/*_stat-<r|r2|alpha>_statmap.nii.gz`: per-voxel maps, with JSON sidecars\n"
        "- `sub-<label>.html`: participant reports (figures in `sub-<label>/figures/`)\n"
        "- `group/`: group maps, `summary.tsv` and `group.html`\n"
        "- `descriptions.tsv`: what each `desc-<label>` (feature space) is\n"
        "- `logs/CITATION.md`: methods text and references; `logs/config-<run id>.toml`: run settings;\n"
        "  `logs/citation/sub-<label>.json`: the runs each participant contributed to the text\n"
    )
    return write_text_atomic(output_dir / "README.md", text)


def write_descriptions(output_dir: Path | str, descriptions: Mapping[str, str]) -> Path:
    """Write ``OUTPUT_DIR/descriptions.tsv`` (+ .json) documenting ``desc-<label>`` values.

    Parameters
    ----------
    descriptions : mapping
        ``desc`` label (the feature space, without ``desc-``) to a one-line description.
        Rows already in the file for other labels are kept.
    """
    output_dir = Path(output_dir)
    path = output_dir / "descriptions.tsv"
    rows: dict[str, str] = {}
    if path.exists():
        with path.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                rows[row["desc_id"]] = row["description"]
    for label, text in descriptions.items():
        if not re.match(r"^[0-9a-zA-Z]+$", label):
            raise UsageError(
                f"feature space name {label!r} must be alphanumeric (it is a desc- label)"
            )
        rows[f"desc-{label}"] = " ".join(str(text).split())
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(["desc_id", "description"])
    for desc_id in sorted(rows):
        writer.writerow([desc_id, rows[desc_id]])
    write_json_atomic(
        output_dir / "descriptions.json",
        {
            "Description": "The desc- labels of this dataset: one per feature space.",
            "desc_id": {"Description": "A desc-<label> used in this dataset."},
            "description": {"Description": "What the label stands for (feature space and model)."},
        },
    )
    return write_text_atomic(path, buffer.getvalue())


#: references as (key, markdown text, BibTeX entry)
REFERENCES: tuple[tuple[str, str, str], ...] = (
    (
        "ma2024llmvem",
        "Ma S, Wang L, Hou S, Yan B (2024). Aligned with LLM: a new multi-modal training paradigm "
        "for encoding fMRI activity in visual cortex. arXiv:2401.03851.",
        "@misc{ma2024llmvem,\n  author = {Ma, Shuxiao and Wang, Linyuan and Hou, Senbao and Yan, Bin},\n"
        "  title = {Aligned with {LLM}: a new multi-modal training paradigm for encoding {fMRI} "
        "activity in visual cortex},\n  year = {2024},\n  eprint = {2401.03851},\n"
        "  archivePrefix = {arXiv}\n}",
    ),
    (
        "doerig2025llm",
        "Doerig A, Kietzmann TC, Allen E, Wu Y, Naselaris T, Kay K, Charest I (2025). High-level "
        "visual representations in the human brain are aligned with large language models. "
        "Nature Machine Intelligence. doi:10.1038/s42256-025-01072-0.",
        "@article{doerig2025llm,\n  author = {Doerig, Adrien and Kietzmann, Tim C. and Allen, Emily "
        "and Wu, Yihan and Naselaris, Thomas and Kay, Kendrick and Charest, Ian},\n"
        "  title = {High-level visual representations in the human brain are aligned with large "
        "language models},\n  journal = {Nature Machine Intelligence},\n  year = {2025},\n"
        "  doi = {10.1038/s42256-025-01072-0}\n}",
    ),
    (
        "tang2023bridgetower",
        "Tang J, Du M, Vo VA, Lal V, Huth AG (2023). Brain encoding models based on multimodal "
        "transformers can transfer across language and vision. Advances in Neural Information "
        "Processing Systems 36 (NeurIPS 2023).",
        "@inproceedings{tang2023bridgetower,\n  author = {Tang, Jerry and Du, Meng and Vo, Vy A. and "
        "Lal, Vasudev and Huth, Alexander G.},\n  title = {Brain encoding models based on multimodal "
        "transformers can transfer across language and vision},\n  booktitle = {Advances in Neural "
        "Information Processing Systems},\n  volume = {36},\n  year = {2023}\n}",
    ),
    (
        "dupre2022himalaya",
        "Dupré la Tour T, Eickenberg M, Nunez-Elizalde AO, Gallant JL (2022). Feature-space "
        "selection with banded ridge regression. NeuroImage 264:119728. "
        "doi:10.1016/j.neuroimage.2022.119728.",
        "@article{dupre2022himalaya,\n  author = {Dupr{\\'e} la Tour, Tom and Eickenberg, Michael and "
        "Nunez-Elizalde, Anwar O. and Gallant, Jack L.},\n  title = {Feature-space selection with "
        "banded ridge regression},\n  journal = {NeuroImage},\n  volume = {264},\n"
        "  pages = {119728},\n  year = {2022},\n  doi = {10.1016/j.neuroimage.2022.119728}\n}",
    ),
    (
        "nunezelizalde2019banded",
        "Nunez-Elizalde AO, Huth AG, Gallant JL (2019). Voxelwise encoding models with "
        "non-spherical multivariate normal priors. NeuroImage 197:482-492. "
        "doi:10.1016/j.neuroimage.2019.04.012.",
        "@article{nunezelizalde2019banded,\n  author = {Nunez-Elizalde, Anwar O. and Huth, "
        "Alexander G. and Gallant, Jack L.},\n  title = {Voxelwise encoding models with "
        "non-spherical multivariate normal priors},\n  journal = {NeuroImage},\n"
        "  volume = {197},\n  pages = {482--492},\n  year = {2019},\n"
        "  doi = {10.1016/j.neuroimage.2019.04.012}\n}",
    ),
    (
        "lescroart2015fourier",
        "Lescroart MD, Stansbury DE, Gallant JL (2015). Fourier power, subjective distance, and "
        "object categories all provide plausible models of BOLD responses in scene-selective "
        "visual areas. Frontiers in Computational Neuroscience 9:135. "
        "doi:10.3389/fncom.2015.00135.",
        "@article{lescroart2015fourier,\n  author = {Lescroart, Mark D. and Stansbury, Dustin E. "
        "and Gallant, Jack L.},\n  title = {Fourier power, subjective distance, and object "
        "categories all provide plausible models of {BOLD} responses in scene-selective visual "
        "areas},\n  journal = {Frontiers in Computational Neuroscience},\n  volume = {9},\n"
        "  pages = {135},\n  year = {2015},\n  doi = {10.3389/fncom.2015.00135}\n}",
    ),
    (
        "deheer2017hierarchical",
        "de Heer WA, Huth AG, Griffiths TL, Gallant JL, Theunissen FE (2017). The hierarchical "
        "cortical organization of human speech processing. Journal of Neuroscience "
        "37(27):6539-6557. doi:10.1523/JNEUROSCI.3267-16.2017.",
        "@article{deheer2017hierarchical,\n  author = {de Heer, Wendy A. and Huth, Alexander G. "
        "and Griffiths, Thomas L. and Gallant, Jack L. and Theunissen, Fr{\\'e}d{\\'e}ric E.},\n"
        "  title = {The hierarchical cortical organization of human speech processing},\n"
        "  journal = {Journal of Neuroscience},\n  volume = {37},\n  number = {27},\n"
        "  pages = {6539--6557},\n  year = {2017},\n  doi = {10.1523/JNEUROSCI.3267-16.2017}\n}",
    ),
    (
        "kriegeskorte2008rsa",
        "Kriegeskorte N, Mur M, Bandettini P (2008). Representational similarity analysis - "
        "connecting the branches of systems neuroscience. Frontiers in Systems Neuroscience "
        "2:4. doi:10.3389/neuro.06.004.2008.",
        "@article{kriegeskorte2008rsa,\n  author = {Kriegeskorte, Nikolaus and Mur, Marieke and "
        "Bandettini, Peter},\n  title = {Representational similarity analysis - connecting the "
        "branches of systems neuroscience},\n  journal = {Frontiers in Systems Neuroscience},\n"
        "  volume = {2},\n  pages = {4},\n  year = {2008},\n"
        "  doi = {10.3389/neuro.06.004.2008}\n}",
    ),
    (
        "nili2014toolbox",
        "Nili H, Wingfield C, Walther A, Su L, Marslen-Wilson W, Kriegeskorte N (2014). A "
        "toolbox for representational similarity analysis. PLoS Computational Biology "
        "10(4):e1003553. doi:10.1371/journal.pcbi.1003553.",
        "@article{nili2014toolbox,\n  author = {Nili, Hamed and Wingfield, Cai and Walther, "
        "Alexander and Su, Li and Marslen-Wilson, William and Kriegeskorte, Nikolaus},\n"
        "  title = {A toolbox for representational similarity analysis},\n  journal = {PLoS "
        "Computational Biology},\n  volume = {10},\n  number = {4},\n  pages = {e1003553},\n"
        "  year = {2014},\n  doi = {10.1371/journal.pcbi.1003553}\n}",
    ),
    (
        "abraham2014nilearn",
        "Abraham A, Pedregosa F, Eickenberg M, et al. (2014). Machine learning for neuroimaging "
        "with scikit-learn. Frontiers in Neuroinformatics 8:14. doi:10.3389/fninf.2014.00014.",
        "@article{abraham2014nilearn,\n  author = {Abraham, Alexandre and Pedregosa, Fabian and "
        "Eickenberg, Michael and others},\n  title = {Machine learning for neuroimaging with "
        "scikit-learn},\n  journal = {Frontiers in Neuroinformatics},\n  volume = {8},\n"
        "  pages = {14},\n  year = {2014},\n  doi = {10.3389/fninf.2014.00014}\n}",
    ),
    (
        "yarkoni2019pybids",
        "Yarkoni T, Markiewicz CJ, de la Vega A, et al. (2019). PyBIDS: Python tools for BIDS "
        "datasets. Journal of Open Source Software 4(40):1294. doi:10.21105/joss.01294.",
        "@article{yarkoni2019pybids,\n  author = {Yarkoni, Tal and Markiewicz, Christopher J. and "
        "de la Vega, Alejandro and others},\n  title = {{PyBIDS}: Python tools for {BIDS} "
        "datasets},\n  journal = {Journal of Open Source Software},\n  volume = {4},\n"
        "  number = {40},\n  pages = {1294},\n  year = {2019},\n  doi = {10.21105/joss.01294}\n}",
    ),
    (
        "gorgolewski2011nipype",
        "Gorgolewski K, Burns CD, Madison C, et al. (2011). Nipype: a flexible, lightweight and "
        "extensible neuroimaging data processing framework in Python. Frontiers in "
        "Neuroinformatics 5:13. doi:10.3389/fninf.2011.00013.",
        "@article{gorgolewski2011nipype,\n  author = {Gorgolewski, Krzysztof and Burns, Christopher "
        "D. and Madison, Cindee and others},\n  title = {Nipype: a flexible, lightweight and "
        "extensible neuroimaging data processing framework in {Python}},\n  journal = {Frontiers in "
        "Neuroinformatics},\n  volume = {5},\n  pages = {13},\n  year = {2011},\n"
        "  doi = {10.3389/fninf.2011.00013}\n}",
    ),
    (
        "ilharco2021openclip",
        "Ilharco G, Wortsman M, Wightman R, et al. (2021). OpenCLIP. Zenodo. "
        "doi:10.5281/zenodo.5143773.",
        "@software{ilharco2021openclip,\n  author = {Ilharco, Gabriel and Wortsman, Mitchell and "
        "Wightman, Ross and others},\n  title = {{OpenCLIP}},\n  year = {2021},\n"
        "  publisher = {Zenodo},\n  doi = {10.5281/zenodo.5143773}\n}",
    ),
    (
        "reimers2019sbert",
        "Reimers N, Gurevych I (2019). Sentence-BERT: sentence embeddings using Siamese "
        "BERT-networks. Proceedings of EMNLP-IJCNLP 2019. doi:10.18653/v1/D19-1410.",
        "@inproceedings{reimers2019sbert,\n  author = {Reimers, Nils and Gurevych, Iryna},\n"
        "  title = {Sentence-{BERT}: Sentence Embeddings using {Siamese} {BERT}-Networks},\n"
        "  booktitle = {Proceedings of the 2019 Conference on Empirical Methods in Natural Language "
        "Processing},\n  year = {2019},\n  doi = {10.18653/v1/D19-1410}\n}",
    ),
    (
        "naselaris2011encoding",
        "Naselaris T, Kay KN, Nishimoto S, Gallant JL (2011). Encoding and decoding in fMRI. "
        "NeuroImage 56(2):400-410. doi:10.1016/j.neuroimage.2010.07.073.",
        "@article{naselaris2011encoding,\n  author = {Naselaris, Thomas and Kay, Kendrick N. and "
        "Nishimoto, Shinji and Gallant, Jack L.},\n  title = {Encoding and decoding in {fMRI}},\n"
        "  journal = {NeuroImage},\n  volume = {56},\n  number = {2},\n  pages = {400--410},\n"
        "  year = {2011},\n  doi = {10.1016/j.neuroimage.2010.07.073}\n}",
    ),
    (
        "wolf2020transformers",
        "Wolf T, Debut L, Sanh V, et al. (2020). Transformers: state-of-the-art natural language "
        "processing. Proceedings of EMNLP 2020: System Demonstrations, 38-45. "
        "doi:10.18653/v1/2020.emnlp-demos.6.",
        "@inproceedings{wolf2020transformers,\n  author = {Wolf, Thomas and Debut, Lysandre and "
        "Sanh, Victor and others},\n  title = {Transformers: State-of-the-Art Natural Language "
        "Processing},\n  booktitle = {Proceedings of the 2020 Conference on Empirical Methods in "
        "Natural Language Processing: System Demonstrations},\n  pages = {38--45},\n  year = {2020},\n"
        "  doi = {10.18653/v1/2020.emnlp-demos.6}\n}",
    ),
    (
        "xu2023bridgetower",
        "Xu X, Wu C, Rosenman S, Lal V, Che W, Duan N (2023). BridgeTower: building bridges "
        "between encoders in vision-language representation learning. Proceedings of AAAI 37(9), "
        "10637-10647. doi:10.1609/aaai.v37i9.26263.",
        "@inproceedings{xu2023bridgetower,\n  author = {Xu, Xiao and Wu, Chenfei and Rosenman, "
        "Shachar and Lal, Vasudev and Che, Wanxiang and Duan, Nan},\n  title = {{BridgeTower}: "
        "Building Bridges between Encoders in Vision-Language Representation Learning},\n"
        "  booktitle = {Proceedings of the AAAI Conference on Artificial Intelligence},\n"
        "  volume = {37},\n  number = {9},\n  pages = {10637--10647},\n  year = {2023},\n"
        "  doi = {10.1609/aaai.v37i9.26263}\n}",
    ),
    (
        "benjamini1995fdr",
        "Benjamini Y, Hochberg Y (1995). Controlling the false discovery rate: a practical and "
        "powerful approach to multiple testing. Journal of the Royal Statistical Society B "
        "57(1):289-300. doi:10.1111/j.2517-6161.1995.tb02031.x.",
        "@article{benjamini1995fdr,\n  author = {Benjamini, Yoav and Hochberg, Yosef},\n  title = "
        "{Controlling the False Discovery Rate: A Practical and Powerful Approach to Multiple "
        "Testing},\n  journal = {Journal of the Royal Statistical Society: Series B},\n"
        "  volume = {57},\n  number = {1},\n  pages = {289--300},\n  year = {1995},\n"
        "  doi = {10.1111/j.2517-6161.1995.tb02031.x}\n}",
    ),
    (
        "gorgolewski2016bids",
        "Gorgolewski KJ, Auer T, Calhoun VD, et al. (2016). The brain imaging data structure, a "
        "format for organizing and describing outputs of neuroimaging experiments. Scientific "
        "Data 3:160044. doi:10.1038/sdata.2016.44.",
        "@article{gorgolewski2016bids,\n  author = {Gorgolewski, Krzysztof J. and Auer, Tibor and "
        "Calhoun, Vince D. and others},\n  title = {The brain imaging data structure, a format for "
        "organizing and describing outputs of neuroimaging experiments},\n  journal = {Scientific "
        "Data},\n  volume = {3},\n  pages = {160044},\n  year = {2016},\n"
        "  doi = {10.1038/sdata.2016.44}\n}",
    ),
)

#: packages whose versions the methods text reports (distribution name, display name)
_SOFTWARE = (
    ("numpy", "NumPy"),
    ("torch", "PyTorch"),
    ("nibabel", "NiBabel"),
    ("nilearn", "Nilearn"),
    ("pybids", "PyBIDS"),
    ("nipype", "Nipype"),
    ("open_clip_torch", "OpenCLIP"),
    ("transformers", "Transformers"),
    ("sentence-transformers", "Sentence-Transformers"),
)


def _software_versions() -> list[str]:
    found = []
    for dist, label in _SOFTWARE:
        try:
            found.append(f"{label} {package_version(dist)}")
        except PackageNotFoundError:
            continue
    return found


def _fmt_number(value: float) -> str:
    return f"{value:g}"


#: model families -> how the methods text names and cites them
_FAMILY_TEXT = {
    "openclip": "OpenCLIP [@ilharco2021openclip]",
    "sentence": "Sentence-Transformers [@reimers2019sbert]",
    "hf": "Hugging Face Transformers [@wolf2020transformers]",
    "bridgetower": "BridgeTower [@xu2023bridgetower] (Hugging Face Transformers "
    "[@wolf2020transformers])",
}


def _family(fs: Mapping[str, Any]) -> str:
    return str(fs.get("family") or str(fs.get("spec", "")).split("=")[-1].split(":")[0])


def _models_sentence(feature_spaces: Sequence[Mapping[str, Any]], params: Mapping) -> str:
    """Which libraries computed the features, and the work each choice follows (only what
    this run used is cited)."""
    families = list(dict.fromkeys(_family(fs) for fs in feature_spaces))
    named = [_FAMILY_TEXT[f] for f in families if f in _FAMILY_TEXT]
    text = f"Features were computed with {', '.join(named)}." if named else ""
    follows = []
    if any(fs.get("modality") == "text" for fs in feature_spaces):
        follows.append("language-model embeddings of scene captions predict visual cortex "
                       "[@doerig2025llm]")  # fmt: skip
    if params.get("alignment"):
        follows.append("aligning an image encoder with language-model descriptions improves "
                       "visual encoding models [@ma2024llmvem]")  # fmt: skip
    if "bridgetower" in families or params.get("transfers"):
        follows.append("multimodal transformer features transfer between language and vision "
                       "[@tang2023bridgetower]")  # fmt: skip
    if follows:
        text += " This follows work showing that " + "; that ".join(follows) + "."
    return text.strip()


def _alignment_text(alignment: Mapping[str, Any]) -> str:
    """The LLM-VEM alignment as run: base and target spaces, loss, schedule, folds."""
    s = alignment.get("settings", {})
    method = (
        f"low-rank adapters (rank {s.get('lora_rank')}) on every block"
        if s.get("method") == "lora"
        else "all blocks"
        if s.get("unfreeze_blocks") == -1
        else f"the last {s.get('unfreeze_blocks')} block(s) unfrozen"
    )
    loss = (
        "the symmetric contrastive (InfoNCE) loss of CLIP, in which images whose captions "
        "were the same (embeddings with cosine > 0.99) were not negatives of each other"
        if s.get("loss") == "infonce"
        else "a cosine regression to the caption embedding"
    )
    corpus = alignment.get("corpus")
    data = (
        f"the images and captions of an external corpus ({Path(str(corpus)).name})"
        if corpus
        else "the stimulus images and their caption embeddings, in folds that never saw the "
        "stimuli of the runs (or stimuli) each encoding fold predicts; the final alignment used "
        "every stimulus"
    )
    return (
        f"The `{alignment['name']}` feature space followed LLM-VEM [@ma2024llmvem]: the image "
        f"encoder of `{alignment['base']}` was trained to match the `{alignment['target']}` "
        f"embeddings of the captions with {loss} (alignment weight {s.get('alignment_weight')} "
        f"against preserving the original features), {method}, AdamW at learning rate "
        f"{s.get('lr')} with warm-up and cosine decay, batches of {s.get('batch_size')} images, "
        f"up to {s.get('epochs')} epochs with early stopping on a validation slice, random seed "
        f"{s.get('seed')}, on {data}.{_temperature_text(s)}"
    )


def _temperature_text(s: Mapping[str, Any]) -> str:
    """How InfoNCE's temperature trained (nothing for the cosine loss)."""
    if s.get("loss") != "infonce":
        return ""
    rate = s.get("temperature_lr")
    if rate is None:  # plans written before the temperature had its own rate
        return ""
    if not rate:
        return " The loss's temperature was fixed at 0.07."
    return (
        f" The loss's temperature started at 0.07 and was learned at its own rate ({rate:g}, "
        "no weight decay)."
    )


def _cleaning_text(params: Mapping[str, Any]) -> str:
    """How the BOLD was cleaned before the models saw it."""
    confounds = list(params.get("confounds") or [])
    parts = [
        "fMRIPrep's non-steady-state volumes regressed out"
        + (f", with the confounds {', '.join(confounds)}" if confounds else "")
    ]
    if params.get("high_pass"):
        parts.append(f"a cosine high-pass filter at {_fmt_number(float(params['high_pass']))} Hz")
    text = (
        "The preprocessed BOLD of each run was cleaned inside the brain mask common to the "
        f"runs with Nilearn [@abraham2014nilearn] ({'; '.join(parts)}), and each run's time "
        "series and design were z-scored separately."
    )
    if params.get("confound_regression") == "bold-and-design":
        text += (
            " The same regressors, with each run's constant and linear trend, were projected "
            "out of the run's design matrix as well, so that the weights are those of one "
            "model in which they are fitted without penalty (Frisch-Waugh-Lovell); a confound "
            "that follows the stimulus cannot bias them. Where a fold trained on part of a run, "
            "they were fitted again on its training samples alone, so that no held-out sample "
            "reached training through them."
        )
    if params.get("word_rate") == "regress":
        text += (
            " Because Lanczos resampling sums the features of the words within each TR, the "
            "story features scale with the word rate; the word rate (words per TR, resampled "
            "alike, at the same FIR delays) was projected out of the BOLD and the design."
        )
    return text


def _statistics_text(params: Mapping[str, Any]) -> str:
    """Per-voxel inference and its correction, as this run computed them."""
    n = params.get("permutations")
    if not n:
        return ""
    null = (
        "predictions permuted among the held-out stimuli"
        if params.get("trial_responses")
        else "predictions circularly shifted against the measured time courses"
    )
    return (
        f"Each voxel's held-out r was tested against {n} permutations ({null}), with "
        "Benjamini-Hochberg false discovery rate [@benjamini1995fdr] over the mask (stat-q) "
        "and the permutation maximum over voxels for family-wise error (stat-pfwe). At the "
        "group level, Fisher-z r maps were tested across participants by one-sample t-tests, "
        "with the same FDR correction."
    )


def methods_text(
    *,
    feature_spaces: Sequence[Mapping[str, Any]],
    n_runs: int,
    params: Mapping[str, Any],
    version: str,
    n_subjects: int | None = None,
) -> str:
    """Methods boilerplate (Markdown) describing what this run did.

    Parameters
    ----------
    feature_spaces : sequence of mappings
        ``name``, ``spec``, and optionally ``modality`` and ``n_features`` per feature space.
    n_runs : int
        BOLD runs used.
    params : mapping
        ``delays`` (TRs), ``alphas``, ``cv`` (e.g. "leave-one-run-out"), ``score``
        ("correlation" or "r2"), ``tr`` (s); missing keys are left out of the text.
    version : str
        bids_vem version.
    n_subjects : int, optional
        Participants analysed.
    """
    who = f"{n_subjects} participant{'s' if n_subjects != 1 else ''}, " if n_subjects else ""
    lines = [
        f"Voxelwise encoding models were fitted with bids_vem {version} ({CODE_URL}), a BIDS App "
        "[@gorgolewski2016bids] that reads its inputs with PyBIDS [@yarkoni2019pybids] and runs its "
        f"workflows with Nipype [@gorgolewski2011nipype]. The analysis used {who}{n_runs} BOLD "
        f"run{'s' if n_runs != 1 else ''}.",
        "",
    ]
    alignment = params.get("alignment")
    if feature_spaces:
        lines.append(
            f"The stimuli were described by {len(feature_spaces)} feature "
            f"space{'s' if len(feature_spaces) != 1 else ''}:"
        )
        for fs in feature_spaces:
            extra = [str(fs[k]) for k in ("modality",) if fs.get(k)]
            if fs.get("n_features"):
                extra.append(f"{int(fs['n_features'])} features")
            if fs.get("weights_sha256"):
                extra.append(f"weights sha256 {str(fs['weights_sha256'])[:12]}")
            detail = f" ({'; '.join(extra)})" if extra else ""
            lines.append(f"- `{fs.get('name', '?')}`: `{fs.get('spec', '?')}`{detail}")
        if alignment:
            lines.append(
                f"- `{alignment['name']}`: the image encoder of `{alignment['base']}` aligned to "
                f"the `{alignment['target']}` caption embeddings (below)"
            )
        lines += ["", _models_sentence(feature_spaces, params), ""]
    if alignment:
        lines += [_alignment_text(alignment), ""]
    lines += [_cleaning_text(params), ""]
    if params.get("trial_responses"):
        design = (
            f"One response per trial was obtained ({params['trial_responses']}) and the "
            "features of each trial's stimulus were regressed on these responses"
        )
    else:
        design = "Features were placed on the acquisition time grid"
        if params.get("tr"):
            design += f" (TR = {_fmt_number(float(params['tr']))} s)"
        delays = params.get("delays")
        if delays:
            design += f" and delayed by {', '.join(str(int(d)) for d in delays)} TRs (finite impulse response model)"
    ridge = design + ". Ridge regression fitted one model per voxel"
    alphas = params.get("alphas")
    if alphas:
        ridge += (
            f", with a penalty chosen per voxel among {len(alphas)} values from "
            f"{_fmt_number(min(alphas))} to {_fmt_number(max(alphas))}"
        )
    cv = params.get("cv", "cross-validation whose folds are whole runs")
    # bids_vem's own engine: one eigendecomposition per training design, all penalties and
    # voxels from it (himalaya is cited where it runs: --joint)
    ridge += (
        f" by {cv} (voxelwise encoding models [@naselaris2011encoding]; each training design "
        "decomposed once for all penalties and voxels)."
    )
    score = params.get("score")
    if score:
        ridge += (
            f" Prediction accuracy on held-out runs was scored by {score}; maps of the correlation "
            "(r), the coefficient of determination (R²) and the selected penalty were written per "
            "voxel."
        )
    lines.append(ridge)
    statistics = _statistics_text(params)
    if statistics:
        lines += ["", statistics]
    for spaces in params.get("joint") or []:
        joined = ", ".join(f"`{name}`" for name in spaces)
        lines += [
            "",
            f"A banded ridge model [@nunezelizalde2019banded; @dupre2022himalaya] was fitted per "
            f"voxel over the concatenated features of {joined}, with one penalty per feature "
            "space chosen, with the overall penalty, by a random search over band weights "
            "(himalaya) in an inner cross-validation nested in the folds above. The variance "
            "each space explains uniquely and jointly was estimated by set-theoretic variance "
            "partitioning of the held-out R² of models fitted on every subset of the spaces "
            "[@lescroart2015fourier; @deheer2017hierarchical]; negative estimates were kept as "
            "estimated.",
        ]
    for name in params.get("decode") or []:
        corpus = params.get("decode_corpus")
        lines += [
            "",
            f"Scene captions were decoded from brain activity [@doerig2025llm]: the `{name}` "
            "embedding of each stimulus's captions was predicted from its response pattern "
            "(single-trial responses z-scored per session and averaged over repeats) by linear "
            "kernel ridge regression in five folds of unique stimuli, the penalty chosen by an "
            "inner stimulus-disjoint cross-validation. Each predicted embedding ranked, by "
            "Pearson correlation, the captions of its fold's held-out stimuli"
            + (f" and {corpus} corpus captions" if corpus else "")
            + "; top-1 and top-5 accuracy and the mean rank were tested against a null that "
            "repeated the whole cross-validation with shuffled pairings"
            + (
                f" ({params['decode_permutations']} permutations)."
                if params.get("decode_permutations")
                else "."
            ),
        ]
    if params.get("rsa"):
        lines += [
            "",
            "Representational similarity analysis [@kriegeskorte2008rsa] compared brain "
            "representational dissimilarity matrices (RDMs), from single-trial response patterns "
            "by cross-validated Euclidean distance between odd and even presentations (or "
            "correlation distance when stimuli were not repeated), with each feature space's RDM "
            "(correlation distance) by Spearman's rho and Kendall's tau-a, tested by permuting "
            "the stimulus labels; noise ceilings followed Nili et al. [@nili2014toolbox]"
            + (f", and a searchlight of {params['rsa_radius']:g} mm spheres mapped rho."
               if params.get("rsa_radius") else "."),
        ]  # fmt: skip
    transfers = params.get("transfers") or []
    if transfers:
        kinds = {t["kind"] for t in transfers}
        pairs = "; ".join(
            f"{t['source_task']} to {t['target_task']}, `{t['source_space']}` to "
            f"`{t['target_space']}` ({t['kind']})"
            for t in transfers
        )
        lines += [
            "",
            "Cross-modal transfer [@tang2023bridgetower]: encoding models fitted on every run "
            "of one task (penalties by leave-one-run-out cross-validation within that task) "
            "predicted the runs of another task from its stimuli's features, never fitted on "
            f"them ({pairs})."
            + (" Shared pairs are the text and image towers of one model, whose outputs share "
               "a space (layer to layer)." if "shared" in kinds else "")
            + (" Mapped pairs are separate text and image encoders (the unimodal control): "
               "the target features were carried into the source space by a ridge map "
               "(penalty by leave-one-out) fitted on the images and captions of an "
               "image-caption corpus." if "mapped" in kinds else "")
            + " Transfer r was the Pearson correlation of measured and predicted BOLD over the "
            "target runs (each z-scored)"
            + (f", tested against {params['transfer_permutations']} permutations shuffling "
               "each target run's prediction in blocks of 10 TRs, with Benjamini-Hochberg FDR "
               "over the mask." if params.get("transfer_permutations") else "."),
        ]  # fmt: skip
    software = _software_versions()
    if software:
        lines += [
            "",
            f"Software: {', '.join(software)}; figures with Nilearn [@abraham2014nilearn].",
        ]
    return "\n".join(lines) + "\n"


def write_citation(
    output_dir: Path | str,
    *,
    feature_spaces: Sequence[Mapping[str, Any]],
    n_runs: int,
    params: Mapping[str, Any],
    version: str,
    n_subjects: int | None = None,
    runs_by_subject: Mapping[str, int] | None = None,
) -> Path:
    """Write ``logs/CITATION.md`` (methods text + references) and ``logs/CITATION.bib``.

    Parameters are those of :func:`methods_text`. Returns the path of ``CITATION.md``.
    The text is released under CC0, as fMRIPrep's boilerplate, so it may be copied into papers.

    With ``runs_by_subject`` (participant label: BOLD runs used), each participant's runs are
    recorded in ``logs/citation/sub-<label>.json`` and the text counts every participant
    recorded there, not only this run's: participants run as separate jobs into one
    OUTPUT_DIR (an array job) then get one text that names them all, whichever job ends last.
    """
    logs = Path(output_dir) / "logs"
    # the job that writes last must have read every record written before it
    with file_lock(logs / ".citation.lock"):
        if runs_by_subject is not None:
            n_subjects, n_runs = _record_runs(logs / "citation", runs_by_subject)
        return _write_citation(
            logs, feature_spaces=feature_spaces, n_runs=n_runs, params=params,
            version=version, n_subjects=n_subjects,
        )  # fmt: skip


def _record_runs(folder: Path, runs_by_subject: Mapping[str, int]) -> tuple[int, int]:
    """Record each participant's run count; return (participants, runs) over every record."""
    for subject, n in runs_by_subject.items():
        write_json_atomic(folder / f"sub-{subject}.json", {"n_runs": int(n)})
    counts = {}
    for path in sorted(folder.glob("sub-*.json")):
        try:
            counts[path.stem] = int(json.loads(path.read_text())["n_runs"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a record we cannot read is left out, not fatal
    return len(counts), sum(counts.values())


def _write_citation(
    logs: Path,
    *,
    feature_spaces: Sequence[Mapping[str, Any]],
    n_runs: int,
    params: Mapping[str, Any],
    version: str,
    n_subjects: int | None,
) -> Path:
    body = methods_text(
        feature_spaces=feature_spaces,
        n_runs=n_runs,
        params=params,
        version=version,
        n_subjects=n_subjects,
    )
    cited = cited_references(body)
    refs = "\n".join(f"- [@{key}] {text}" for key, text, _ in cited)
    markdown = (
        "# Methods\n\n"
        "The following text was written by bids_vem and may be copied into a manuscript "
        "(released under CC0).\n\n"
        f"{body}\n## References\n\n{refs}\n"
    )
    write_text_atomic(logs / "CITATION.bib", "\n\n".join(bib for _, _, bib in cited) + "\n")
    return write_text_atomic(logs / "CITATION.md", markdown)


def cited_references(text: str) -> list[tuple[str, str, str]]:
    """The :data:`REFERENCES` that ``text`` cites (``[@key]``, ``[@a; @b]``), in the order of
    first citation: a bibliography of what the run used, no more."""
    order = list(dict.fromkeys(re.findall(r"@([A-Za-z0-9]+)", " ".join(
        re.findall(r"\[(@[^\]]+)\]", text)
    ))))  # fmt: skip
    by_key = {ref[0]: ref for ref in REFERENCES}
    return [by_key[key] for key in order if key in by_key]


def new_run_id() -> str:
    """A run identifier ``YYYYMMDD-HHMMSS_<8 hex>`` (fMRIPrep style, UTC)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}_{uuid.uuid4().hex[:8]}"


def write_run_config(output_dir: Path | str, toml_text: str, run_id: str) -> Path:
    """Write the run's settings to ``logs/config-<run_id>.toml``; returns the path.

    Raises
    ------
    UsageError
        ``run_id`` has characters other than letters, digits, ``-`` and ``_``.
    """
    if not re.match(r"^[0-9A-Za-z_-]+$", run_id or ""):
        raise UsageError(f"run id must use letters, digits, '-' and '_' only, got {run_id!r}")
    return write_text_atomic(Path(output_dir) / "logs" / f"config-{run_id}.toml", toml_text)
