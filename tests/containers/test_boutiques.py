"""The Boutiques descriptor: generated from the click command, valid, and it runs the app."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import click
import pytest

from bids_vem import __version__, errors
from bids_vem.cli.boutiques import (
    ANALYSIS_LEVELS,
    DOCKER_IMAGE,
    boutiques_descriptor,
    descriptor_json,
)
from bids_vem.cli.parser import cli, expand_list_options
from tests.containers.conftest import PYTHON, REPO, demo_options

DESCRIPTOR = REPO / "descriptors" / "bids_vem.json"
BOSH = PYTHON.parent / "bosh"


def bosh(*args: str, cwd: Path | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    env = os.environ | {"PATH": f"{PYTHON.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    return subprocess.run(
        [str(BOSH), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def simulate(descriptor: Path, invocation: dict, tmp_path: Path) -> list[str]:
    """The command line ``bosh exec simulate`` renders, split into words."""
    path = tmp_path / "invocation.json"
    path.write_text(json.dumps(invocation))
    done = bosh("exec", "simulate", str(descriptor), "-i", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    line = done.stdout.strip().splitlines()[-1]
    mkdir, _, command = line.partition("; ")
    assert mkdir.startswith("mkdir -p ")
    return shlex.split(command)


def test_the_committed_descriptor_is_the_generated_one():
    assert DESCRIPTOR.read_text() == descriptor_json(), (
        "descriptors/bids_vem.json is out of date: "
        "python -m bids_vem.cli.boutiques > descriptors/bids_vem.json"
    )


def test_the_module_prints_the_descriptor():
    done = subprocess.run(
        [str(PYTHON), "-m", "bids_vem.cli.boutiques"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == boutiques_descriptor()


def test_bosh_validate_and_validate_bids_pass():
    done = bosh("validate", str(DESCRIPTOR))
    assert done.returncode == 0, done.stdout + done.stderr
    done = bosh("validate", "--bids", str(DESCRIPTOR))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "BIDS validation OK" in done.stdout + done.stderr


def test_the_descriptor_follows_the_bids_app_conventions():
    descriptor = boutiques_descriptor()
    assert descriptor["schema-version"] == "0.5"
    assert descriptor["custom"] == {"BIDSApplicationVersion": "2.0"}
    assert descriptor["tool-version"] == __version__
    assert descriptor["command-line"].startswith(
        "mkdir -p [OUTPUT_DIR]; bids_vem [BIDS_DIR] [OUTPUT_DIR] [ANALYSIS_LEVEL] "
        "[PARTICIPANT_LABEL] [SESSION_LABEL] "
    )
    assert descriptor["container-image"]["image"] == f"{DOCKER_IMAGE}:{__version__}"
    assert descriptor["suggested-resources"]["gpu-cores"] >= 1
    levels = {i["id"]: i for i in descriptor["inputs"]}["analysis_level"]["value-choices"]
    assert levels == list(ANALYSIS_LEVELS)
    codes = {e["code"] for e in descriptor["error-codes"]}
    assert codes == {getattr(errors, name).exit_code for name in errors.__all__}
    assert descriptor["tests"]


def test_every_option_of_the_cli_is_an_input():
    inputs = {i["id"]: i for i in boutiques_descriptor()["inputs"]}
    for param in cli.params:
        if not isinstance(param, click.Option) or not param.expose_value:
            continue
        item = inputs[param.name]
        assert item["value-key"] in boutiques_descriptor()["command-line"]
        if param.is_flag and not param.count:
            assert item["type"] == "Flag"
        if param.multiple:
            assert item["list"] is True
    assert inputs["participant_label"]["command-line-flag"] == "--participant-label"
    assert inputs["feature_cache"]["command-line-flag"] == "--no-feature-cache"
    assert inputs["delays"]["type"] == "Number" and inputs["delays"]["integer"] is True
    assert "default-value" not in json.dumps(inputs)  # would override --config-file


def _parse(words: list[str], command: click.Command = cli):
    assert words[0] == "bids_vem"
    return command.main(args=expand_list_options(words[1:]), standalone_mode=False)


def test_simulate_renders_a_command_line_the_cli_parses_as_meant(tmp_path):
    invocation = {
        "bids_dir": "/data/ds",
        "output_dir_name": "/data/out",
        "analysis_level": "participant",
        "participant_label": ["01", "02"],
        "text_encoder": ["minilm=sentence:all-MiniLM-L6-v2", "sentence:/models/mpnet"],
        "delays": [1, 2, 3],
        "alphas": [0.1, 10.0],
        "nprocs": 4,
        "feature_cache": True,
        "skip_bids_validation": True,
        "verbose": "-vv",
        "mem": "16GB",
    }
    words = simulate(DESCRIPTOR, invocation, tmp_path)
    config = _parse(words)
    assert str(config.bids_dir) == "/data/ds" and str(config.output_dir) == "/data/out"
    assert config.participant_label == ("01", "02")
    assert config.text_encoders == ("minilm=sentence:all-MiniLM-L6-v2", "sentence:/models/mpnet")
    assert config.delays == (1, 2, 3)
    assert config.alphas == (0.1, 10.0)
    assert config.nprocs == 4 and config.mem_mb == 16 * 1024
    assert config.feature_cache is False and config.skip_bids_validation is True
    assert config.verbosity == 2


def test_an_option_added_later_appears_and_round_trips(tmp_path):
    """A repeatable option unknown to the list-expansion table renders as --opt a --opt b."""
    extra = click.Option(["--new-thing"], multiple=True, help="Something new.")
    command = click.Command("bids_vem", params=[*cli.params, extra], callback=lambda **kw: kw)
    descriptor = boutiques_descriptor(command)
    item = {i["id"]: i for i in descriptor["inputs"]}["new_thing"]
    assert item["list-separator"] == " --new-thing "
    path = tmp_path / "descriptor.json"
    path.write_text(json.dumps(descriptor))
    invocation = {"bids_dir": "/d", "output_dir_name": "/o", "analysis_level": "group"}
    words = simulate(path, invocation | {"new_thing": ["a", "b c"]}, tmp_path)
    assert words[-4:] == ["--new-thing", "a", "--new-thing", "b c"]
    assert command.main(args=words[1:], standalone_mode=False)["new_thing"] == ("a", "b c")


@pytest.mark.parametrize("case", boutiques_descriptor()["tests"], ids=lambda case: case["name"])
def test_the_descriptor_tests_pass_through_bosh_launch(case, tmp_path):
    invocation = tmp_path / "invocation.json"
    invocation.write_text(json.dumps(case["invocation"]))
    done = bosh(
        "exec", "launch", "--no-container", "--skip-data-collection",
        str(DESCRIPTOR), str(invocation), cwd=tmp_path,
    )  # fmt: skip
    assert f"Exit code\n{case['assertions']['exit-code']}\n" in done.stdout, done.stdout


@pytest.mark.slow
def test_bosh_launch_runs_the_demo_end_to_end(tiny_demo, tmp_path):
    out = tmp_path / "out"
    argv = demo_options(tiny_demo, text=False)
    options = {
        "captions": argv[argv.index("--captions") + 1],
        "image_encoder": [argv[argv.index("--image-encoder") + 1]],
        "alphas": [float(a) for a in argv[argv.index("--alphas") + 1 :]],
    }
    invocation = {
        "bids_dir": str(tiny_demo.bids_dir),
        "output_dir_name": str(out),
        "analysis_level": "participant",
        "participant_label": ["01"],
        "work_dir": str(tmp_path / "work"),
        "nprocs": 2,
        "skip_bids_validation": True,
        **options,
    }
    path = tmp_path / "invocation.json"
    path.write_text(json.dumps(invocation))
    done = bosh(
        "exec", "launch", "--no-container", "--skip-data-collection", str(DESCRIPTOR), str(path),
        cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert "Exit code\n0\n" in done.stdout, done.stdout[-3000:]
    maps = sorted((out / "sub-01" / "func").glob("*_desc-randomclip_stat-r_statmap.nii.gz"))
    assert len(maps) == 1
    assert (out / "sub-01.html").is_file()
    assert (out / "dataset_description.json").is_file()
