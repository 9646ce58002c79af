"""Rules of the Dockerfile, .dockerignore and Singularity.def, checked by parsing them.

No Docker engine or Apptainer runs here. The Dockerfile is read with ``dockerfile-parse``;
Singularity.def has no parser on PyPI, so :func:`singularity_sections` reads its header and
``%sections`` (the format: ``Key: value`` header lines, then ``%name`` lines each opening a
section that runs to the next one).
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from bids_vem import __version__
from bids_vem.cli.boutiques import DOCKER_IMAGE
from tests.containers.conftest import REPO

ROOT_USERS = {"root", "0", "0:0", "root:root"}


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    return DockerfileParser(str(REPO / "Dockerfile"))


def stages(parser: DockerfileParser) -> list[list[dict]]:
    """The instructions of each build stage (the list starts at each FROM)."""
    out: list[list[dict]] = []
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            out.append([])
        if out and instruction["instruction"] != "COMMENT":
            out[-1].append(instruction)
    return out


def values(stage: list[dict], name: str) -> list[str]:
    return [i["value"] for i in stage if i["instruction"] == name]


def test_the_build_is_multi_stage_and_the_final_stage_only_copies(dockerfile):
    builder, final = stages(dockerfile)
    assert values(builder, "FROM")[0].endswith(" AS builder")
    copies = values(final, "COPY")
    assert copies and all(c.startswith("--from=builder ") for c in copies)
    for run in values(final, "RUN"):
        # no package installs, compilers or downloads in the image that ships
        assert not re.search(r"\b(pip|apt-get|apt|gcc|make|curl|wget)\b", run), run
    for run in values(builder, "RUN"):
        if "pip install" in run:
            assert "--no-cache-dir" in run


def test_the_final_stage_runs_as_a_non_root_user_with_a_world_writable_home(dockerfile):
    final = stages(dockerfile)[-1]
    users = values(final, "USER")
    assert users and users[-1] not in ROOT_USERS
    name = users[-1].split(":")[0]
    envs = dockerfile.envs
    home = envs["HOME"]
    runs = " && ".join(values(final, "RUN"))
    words = shlex.split(runs.replace("&&", " ; "))
    assert "useradd" in words and name in words
    assert f"--home-dir {home}" in runs or f"-d {home}" in runs
    assert f"chmod -R go=u {home}" in runs or "chmod -R go=u $HOME" in runs


def test_entrypoint_workdir_and_environment(dockerfile):
    final = stages(dockerfile)[-1]
    assert json.loads(values(final, "ENTRYPOINT")[-1]) == ["bids_vem"]
    assert values(final, "WORKDIR")[-1] == "/tmp"
    envs = dockerfile.envs
    assert envs["OMP_NUM_THREADS"] == "1"
    assert envs["MKL_NUM_THREADS"] == "1"
    assert envs["HF_HUB_OFFLINE"] == "1"
    assert envs["BIDS_VEM_DOCKER_TAG"] == f"{DOCKER_IMAGE}:{__version__}"


def test_oci_labels_come_from_build_arguments(dockerfile):
    final = stages(dockerfile)[-1]
    args = {v.split("=")[0] for v in values(final, "ARG")}
    label_text = " ".join(values(final, "LABEL"))
    for key, arg in (("version", "VERSION"), ("revision", "VCS_REF"), ("source", "SOURCE")):
        assert arg in args
        assert re.search(rf'org\.opencontainers\.image\.{key}="\$\{{{arg}\}}"', label_text)
    # the default version is the package's
    assert f"VERSION={__version__}" in values(final, "ARG")
    assert dockerfile.labels["org.opencontainers.image.version"] == __version__


def test_model_specs_are_baked_where_the_model_search_looks(dockerfile):
    builder, final = stages(dockerfile)
    assert any(v.split("=")[0] == "MODEL_SPECS" for v in values(builder, "ARG"))
    model_dir = dockerfile.envs["BIDS_VEM_MODEL_DIR"]
    fetch = [r for r in values(builder, "RUN") if "bids_vem models fetch" in r]
    assert len(fetch) == 1
    assert f"--dest {model_dir}" in fetch[0] and "$MODEL_SPECS" in fetch[0]
    assert "HF_HUB_OFFLINE=0" in fetch[0]  # the one step that may download
    assert f"--from=builder {model_dir} {model_dir}" in values(final, "COPY")


def test_the_cuda_build_of_torch_is_the_default(dockerfile):
    """PyPI's Linux torch wheel is the CUDA one: nothing may switch the default to CPU."""
    builder = stages(dockerfile)[0]
    assert 'TORCH_INDEX_URL=""' in values(builder, "ARG")
    assert "cpu" not in " ".join(values(builder, "ENV")).lower()


def test_dockerignore_sends_only_what_the_image_installs(dockerfile):
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        # Docker's rule: the last matching pattern wins; "!" re-includes
        result = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            body = pattern[1:] if negate else pattern
            parts = path.split("/")
            prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
            if any(fnmatch.fnmatch(p, body.replace("**/", "*")) for p in prefixes):
                result = not negate
        return result

    for source in ("pyproject.toml", "README.md", "bids_vem/cli/run.py"):
        assert not ignored(source), source
    for junk in (".venv/bin/python", "work/x", "demo_run/ds", ".git/HEAD", "tests/conftest.py",
                 "bids_vem/__pycache__/x.pyc"):  # fmt: skip
        assert ignored(junk), junk
    copied = [c.split()[0] for c in values(stages(dockerfile)[0], "COPY")]
    for line in copied:
        for source in line.split():
            assert not ignored(source)


def singularity_sections(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """(header ``Key: value`` pairs, ``%section`` name -> body) of a Singularity definition."""
    header: dict[str, str] = {}
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        match = re.match(r"^%(\w+)\s*(.*)$", line)
        if match:
            current = sections.setdefault(match.group(1), [])
            continue
        if current is not None:
            current.append(line)
        elif line.strip() and not line.lstrip().startswith("#"):
            key, colon, value = line.partition(":")
            assert colon, f"header line without 'Key:': {line!r}"
            header[key.strip()] = value.strip()
    return header, {name: "\n".join(body).strip() for name, body in sections.items()}


def test_singularity_def_bootstraps_from_the_published_image():
    header, sections = singularity_sections((REPO / "Singularity.def").read_text())
    assert header["Bootstrap"] == "docker"
    assert header["From"] == f"{DOCKER_IMAGE}:{__version__}"
    runscript = [line.strip() for line in sections["runscript"].splitlines() if line.strip()]
    assert runscript == ['exec bids_vem "$@"']
    assert "apptainer run --cleanenv --nv" in sections["help"]
    assert "-B" in sections["help"]
    environment = sections["environment"]
    for assignment in ("OMP_NUM_THREADS=1", "HF_HUB_OFFLINE=1", "BIDS_VEM_MODEL_DIR="):
        assert assignment in environment
    assert "BIDS_VEM_APPTAINER_URI" in environment


def test_singularity_environment_is_valid_shell_and_names_the_image():
    """%environment is sourced by sh: run it and read back what it exports."""
    _, sections = singularity_sections((REPO / "Singularity.def").read_text())
    script = (
        sections["environment"]
        + '\nprintf "%s|%s" "$BIDS_VEM_APPTAINER_URI" "${BIDS_VEM_DOCKER_TAG-unset}"'
    )
    done = subprocess.run(
        ["sh", "-c", script],
        env={"PATH": "/usr/bin:/bin", "BIDS_VEM_DOCKER_TAG": "x", "APPTAINER_CONTAINER": "/i.sif"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "/i.sif|unset"


def test_the_slurm_example_runs_one_participant_per_array_task(tmp_path):
    """examples/slurm_array.sh with a stand-in apptainer that records its arguments."""
    bids = tmp_path / "ds"
    bids.mkdir()
    (bids / "participants.tsv").write_text("participant_id\tage\nsub-01\t30\nsub-02\t31\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "apptainer"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$RECORD"\n')
    fake.chmod(0o755)
    record = tmp_path / "args.txt"
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "RECORD": str(record),
        "SLURM_ARRAY_TASK_ID": "2",
        "SLURM_CPUS_PER_TASK": "4",
        "SLURM_MEM_PER_NODE": "16000",
        "BIDS_DIR": str(bids),
        "OUTPUT_DIR": str(tmp_path / "out"),
        "WORK_DIR": str(tmp_path / "work"),
        "SIF": "/images/bids_vem.sif",
        "BIDS_VEM_ARGS": "--text-encoder sentence:all-MiniLM-L6-v2",
    }
    script = REPO / "examples" / "slurm_array.sh"
    done = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    args = record.read_text().splitlines()
    assert args[:3] == ["run", "--cleanenv", "--nv"]
    assert f"{bids}:/data:ro" in args and f"{tmp_path / 'work' / 'sub-02'}:/work" in args
    tail = args[args.index("/images/bids_vem.sif") + 1 :]
    assert tail[:5] == ["/data", "/out", "participant", "--participant-label", "02"]
    assert tail[tail.index("--nprocs") + 1] == "4" and tail[tail.index("--mem") + 1] == "16000MB"
    assert tail[-2:] == ["--text-encoder", "sentence:all-MiniLM-L6-v2"]
    # a task number past the last participant is a usage error
    done = subprocess.run(
        ["bash", str(script)], env=env | {"SLURM_ARRAY_TASK_ID": "3"}, capture_output=True,
        text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 64 and "no participant number 3" in done.stderr


def test_docs_and_examples_name_existing_files():
    text = (REPO / "docs" / "containers.md").read_text()
    for path in re.findall(r"`((?:examples|descriptors)/[\w./-]+)`", text):
        assert (REPO / path).exists(), path
    assert Path(REPO / "descriptors" / "brainlife" / "main").stat().st_mode & 0o111
