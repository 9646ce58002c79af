"""prepare_environment: caches go to the work dir only when HOME (or /tmp) cannot take them."""

from __future__ import annotations

import logging

from bids_vem.cli.environment import CACHE_VARIABLES, is_writable_dir, prepare_environment


def test_a_writable_home_changes_nothing(tmp_path, caplog):
    env = {"HOME": str(tmp_path), "TMPDIR": str(tmp_path)}
    with caplog.at_level(logging.INFO, logger="bids_vem"):
        changes = prepare_environment(tmp_path / "work", environ=env)
    assert changes.home_writable
    assert changes.variables == {}
    assert env == {"HOME": str(tmp_path), "TMPDIR": str(tmp_path)}
    assert caplog.records == []
    assert not (tmp_path / "work").exists()


def test_a_missing_home_sends_every_cache_to_the_work_dir_and_logs_once(tmp_path, caplog):
    work = tmp_path / "work"
    env = {"HOME": str(tmp_path / "not-bound"), "TMPDIR": str(tmp_path)}
    with caplog.at_level(logging.INFO, logger="bids_vem"):
        changes = prepare_environment(work, environ=env)
    assert not changes.home_writable
    for name, folder in CACHE_VARIABLES.items():
        assert env[name] == str(work / "caches" / folder)
    assert env["HOME"] == str(tmp_path / "not-bound")  # a set HOME is kept (read-only caches)
    assert len(caplog.records) == 1
    assert "not-bound" in caplog.records[0].getMessage()
    assert "MPLCONFIGDIR" in caplog.records[0].getMessage()


def test_variables_the_user_set_are_kept(tmp_path):
    env = {"HOME": str(tmp_path / "absent"), "HF_HOME": "/models/hf", "TMPDIR": str(tmp_path)}
    changes = prepare_environment(tmp_path / "work", environ=env)
    assert env["HF_HOME"] == "/models/hf"
    assert "HF_HOME" not in changes.variables
    assert env["TORCH_HOME"] == str(tmp_path / "work" / "caches" / "torch")


def test_an_unset_home_gets_one_under_the_work_dir(tmp_path):
    env = {"TMPDIR": str(tmp_path)}
    prepare_environment(tmp_path / "work", environ=env)
    assert env["HOME"] == str(tmp_path / "work" / "caches" / "home")


def test_an_unwritable_tmpdir_is_replaced_by_one_in_the_work_dir(tmp_path):
    env = {"HOME": str(tmp_path), "TMPDIR": str(tmp_path / "no-such-tmp")}
    changes = prepare_environment(tmp_path / "work", environ=env)
    assert changes.tmpdir == tmp_path / "work" / "caches" / "tmp"
    assert changes.tmpdir.is_dir()
    assert env["TMPDIR"] == str(changes.tmpdir)
    assert set(changes.variables) == {"TMPDIR"}


def test_no_folder_is_created_inside_the_bids_dir(tmp_path):
    bids = tmp_path / "ds"
    bids.mkdir()
    env = {"HOME": str(tmp_path), "TMPDIR": str(tmp_path / "no-such-tmp")}
    changes = prepare_environment(bids / "work", bids_dir=bids, environ=env)
    assert changes.tmpdir is None
    assert list(bids.iterdir()) == []


def test_is_writable_dir(tmp_path):
    assert is_writable_dir(tmp_path)
    assert not is_writable_dir(tmp_path / "absent")
    assert not is_writable_dir(None)
    (tmp_path / "file").write_text("x")
    assert not is_writable_dir(tmp_path / "file")
