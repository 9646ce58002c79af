"""A participant whose run fails still gets a report, as fMRIPrep writes one: the error, its
crash files and what finished; the other participants' reports are the usual ones."""

from __future__ import annotations

import pytest

from bids_vem.cli.run import main
from bids_vem.demo.simulate import CONFOUND_COLUMNS
from bids_vem.errors import DataError
from tests.helpers import broken_links, render_in_chromium

pytestmark = pytest.mark.slow


def test_a_failed_participant_gets_a_report(demo_dataset, tmp_path, monkeypatch, capfd):
    import bids_vem.encoding.model as model

    real = model.encode_runs

    def fail_for_sub02(runs, *args, **kwargs):
        if runs[0].subject == "02":
            raise DataError("simulated failure of sub-02's encoding model")
        return real(runs, *args, **kwargs)

    # --nprocs 1: nipype's Linear plugin runs every step in this process, patched
    monkeypatch.setattr(model, "encode_runs", fail_for_sub02)
    out = tmp_path / "out"
    argv = [
        str(demo_dataset.bids_dir), str(out), "participant", "-w", str(tmp_path / "work"),
        "--nprocs", "1", "--participant-label", "01", "02", "--skip-bids-validation",
        "--captions", str(demo_dataset.captions_tsv), "--permutations", "0",
        "--text-encoder", "minilm=sentence:all-MiniLM-L6-v2", "--confounds", *CONFOUND_COLUMNS,
    ]  # fmt: skip
    assert main(argv) == 65
    err = capfd.readouterr().err
    assert "simulated failure of sub-02's encoding model" in err
    failed = (out / "sub-02.html").read_text()
    assert "The run of sub-02 failed." in failed
    assert "simulated failure of sub-02&#x27;s encoding model" in failed
    assert "crash-" in failed and "encode_sub02" in failed
    assert "bold_sub02_taskshapes" in failed  # its cleaned BOLD finished before the failure
    assert broken_links(out / "sub-02.html") == []
    ok = (out / "sub-01.html").read_text()
    assert "Encoding results" in ok and "failed" not in ok.split("<main>")[0]
    pixels, console = render_in_chromium(out / "sub-02.html", tmp_path)
    assert pixels.std() > 0.05 and console == []
