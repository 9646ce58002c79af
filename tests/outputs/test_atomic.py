"""Atomic writes and the clean-up of what killed writers leave behind."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bids_vem.outputs import atomic
from bids_vem.outputs.atomic import atomic_path, remove_stale_temporaries, write_text_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = write_text_atomic(tmp_path / "sub-01_summary.tsv", "old\n")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        # the temporary is hidden, keeps the suffix and names this host and process
        assert tmp.name.startswith(".sub-01_summary.tmp-") and tmp.name.endswith(".tsv")
        assert f"-{os.getpid()}-" in tmp.name
        raise RuntimeError("killed")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub-01_summary.tsv"]


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(done.stdout)


def test_only_the_temporaries_of_dead_writers_on_this_host_are_removed(tmp_path):
    host = atomic._HOST
    func = tmp_path / "sub-01" / "func"
    func.mkdir(parents=True)
    dead = _dead_pid()
    stale = func / f".sub-01_task-x_stat-r_statmap.tmp-{host}-{dead}-ab12cd_3.nii.gz"
    stale_dir = tmp_path / f".sub-01_desc-aligned_model.tmp-{host}-{dead}-model"
    live = func / f".sub-01_task-x_stat-p_statmap.tmp-{host}-{os.getpid()}-zz9.nii.gz"
    elsewhere = func / f".sub-01_task-x_stat-q_statmap.tmp-othernode-{dead}-q1.nii.gz"
    output = func / "sub-01_task-x_stat-r_statmap.nii.gz"
    hidden_user_file = tmp_path / ".datalad"
    for path in (stale, live, elsewhere, output, hidden_user_file):
        path.write_bytes(b"x")
    stale_dir.mkdir()
    (stale_dir / "open_clip_config.json").write_text("{}")
    abandoned = func / f".sub-01_task-x_stat-z_statmap.tmp-container1-{os.getpid()}-z1.nii.gz"
    abandoned.write_bytes(b"x")  # another host's, untouched for two days
    two_days_ago = abandoned.stat().st_mtime - 2 * 86400
    os.utime(abandoned, (two_days_ago, two_days_ago))
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([stale, stale_dir, abandoned])
    for path in (live, elsewhere, output, hidden_user_file):
        assert path.exists(), path
    assert not stale.exists() and not stale_dir.exists()
