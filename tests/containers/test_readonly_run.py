"""The container contract, checked without a container engine.

``docker run --read-only -u $(id -u):$(id -g)`` and Apptainer give bids_vem a read-only file
system, a HOME it cannot write to (or none) and a non-root user; only the output and work dirs
are writable. Here the CLI runs the participant level of the demo in a subprocess as a
non-root user (``nobody`` when the tests run as root), with an unwritable HOME, a read-only
copy of the package first on ``PYTHONPATH``, a read-only current directory and the image's
environment variables (read from the Dockerfile), and must create files nowhere but in the
output and work dirs. Where no non-root user can run this Python (tests as root with the
interpreter under /root), the run happens as root with a HOME that does not exist (and must
not be created), and the non-root test is skipped (test_dockerfile checks USER).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import NamedTuple

import pytest
from dockerfile_parse import DockerfileParser

from tests.containers.conftest import PYTHON, REPO, demo_options

pytestmark = pytest.mark.slow


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def _new_in_tmp(uid: int) -> set[str]:
    """Entries of /tmp owned by ``uid``: where libraries fall back to when HOME is unusable."""
    found = set()
    for entry in os.scandir("/tmp"):
        try:
            if entry.stat(follow_symlinks=False).st_uid == uid:
                found.add(entry.path)
        except OSError:
            pass
    return found


def _image_environment() -> dict[str, str]:
    """The ENV of the Dockerfile's final stage, with this machine's PATH."""
    parser = DockerfileParser(str(REPO / "Dockerfile"))
    env = dict(parser.envs)
    env["PATH"] = f"{PYTHON.parent}:/usr/local/bin:/usr/bin:/bin"
    return env


NETWORK_WATCH = """
import socket
import sys


def _report(event, args):
    if event == "socket.connect":
        sock, address = args
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return  # local sockets (multiprocessing) are not the network
    elif event not in ("socket.getaddrinfo", "urllib.Request", "http.client.connect"):
        return
    sys.stderr.write(f"NETWORK ATTEMPT {event} {args!r:.200}\\n")


sys.addaudithook(_report)
"""


class RunResult(NamedTuple):
    result: subprocess.CompletedProcess
    before: dict
    after: dict
    out: Path
    work: Path
    env: dict
    run_user: tuple[int, int] | None
    isolated: bool
    argv: list[str]


def _without_network(argv: list[str], run_user) -> tuple[list[str], bool]:
    """``argv`` in a new network namespace (``unshare -n``: only a loopback that is down), as
    the run user; whether the namespace could be made. As root: unshare, then drop to the
    run user with setpriv. Otherwise a user namespace maps the caller to itself."""
    unshare, setpriv = shutil.which("unshare"), shutil.which("setpriv")
    if os.geteuid() == 0 and unshare and setpriv:
        drop = []
        if run_user is not None:
            uid, gid = run_user
            drop = [setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]
        return [unshare, "-n", "--", *drop, *argv], True
    if unshare:
        probe = subprocess.run([unshare, "--map-current-user", "-n", "true"], capture_output=True)
        if probe.returncode == 0:
            return [unshare, "--map-current-user", "-n", "--", *argv], True
    return argv, False


@pytest.fixture(scope="module")
def readonly_run(tiny_demo, tmp_path_factory, run_user):
    root = tmp_path_factory.mktemp("readonly")
    root.chmod(0o755)
    package = root / "site" / "bids_vem"
    shutil.copytree(REPO / "bids_vem", package, ignore=shutil.ignore_patterns("__pycache__"))
    cwd, writable = root / "cwd", root / "rw"
    cwd.mkdir()
    writable.mkdir()
    writable.chmod(0o777)  # the bind-mounted output and work dirs
    home = root / "home"
    if run_user is not None:
        home.mkdir()  # read-only below
        if os.geteuid() == 0:
            os.chown(writable, *run_user)
    # else: root may write anywhere; HOME is left unbound (a path that does not exist), as
    # with a container user that has no home, and must still not exist after the run
    for path in [package, *package.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)  # a read-only package directory
    for folder in (root / "site", cwd) + ((home,) if home.is_dir() else ()):
        folder.chmod(0o555)
    out, work = writable / "out", writable / "work"
    # a sitecustomize that reports every attempt to reach the network (Python audit events)
    watch = root / "watch"
    watch.mkdir()
    (watch / "sitecustomize.py").write_text(NETWORK_WATCH)
    watch.chmod(0o555)
    env = _image_environment() | {
        "HOME": str(home),
        "PYTHONPATH": f"{root / 'site'}:{watch}",
    }
    argv = [str(PYTHON), "-m", "bids_vem", str(tiny_demo.bids_dir), str(out), "participant"]
    argv += ["-w", str(work), "--nprocs", "2", *demo_options(tiny_demo)]
    uid = run_user[0] if run_user else 0
    argv, isolated = _without_network(argv, run_user)

    def snapshot():
        return {
            "home": _tree(home) if home.exists() else None,
            "package": _tree(package),
            "cwd": _tree(cwd),
            "bids": _tree(tiny_demo.bids_dir),
            "tmp": _new_in_tmp(uid),
        }

    before = snapshot()
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    return RunResult(result, before, snapshot(), out, work, env, run_user, isolated, argv)


def test_the_run_succeeds_as_a_non_root_user(readonly_run):
    result, _, _, out, _, _, run_user, _, _ = readonly_run
    assert result.returncode == 0, result.stderr[-3000:]
    if run_user is None:
        pytest.skip("running as root and no other user can run this Python (see test_dockerfile)")
    assert run_user[0] != 0
    # every output was written by the non-root user
    owners = {p.stat().st_uid for p in [out, *out.rglob("*")]}
    assert owners == {run_user[0]}
    assert (out / "sub-01.html").is_file()
    assert list((out / "sub-01" / "func").glob("*_stat-r_statmap.nii.gz"))


def test_nothing_is_written_outside_the_output_and_work_dirs(readonly_run):
    result, before, after, _, _, _, _, _, _ = readonly_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert after["home"] == before["home"] in ({}, None)
    assert after["package"] == before["package"]
    assert after["cwd"] == before["cwd"] == {}
    assert after["bids"] == before["bids"]
    assert sorted(after["tmp"] - before["tmp"]) == []


def test_library_caches_went_to_the_work_dir_and_were_logged_once(readonly_run):
    result, _, _, _, work, _, _, _, _ = readonly_run
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if "is not a writable folder" in line]
    assert len(lines) == 1
    assert str(work / "caches") in lines[0]
    assert (work / "caches" / "matplotlib").is_dir()  # matplotlib's config and font cache


def test_dataset_description_names_the_container(readonly_run):
    result, _, _, out, _, env, _, _, _ = readonly_run
    assert result.returncode == 0, result.stderr[-3000:]
    description = json.loads((out / "dataset_description.json").read_text())
    container = description["GeneratedBy"][0]["Container"]
    assert container == {"Type": "docker", "Tag": env["BIDS_VEM_DOCKER_TAG"]}


def test_no_network_is_needed_and_no_download_is_attempted(readonly_run):
    """Run without any network (``unshare -n``), as on compute nodes and brainlife: it
    succeeds, and not one connection or name lookup was attempted on the way."""
    if not readonly_run.isolated:
        pytest.skip("no network namespace here (unshare -n needs root or user namespaces)")
    result = readonly_run.result
    assert result.returncode == 0, result.stderr[-3000:]
    attempts = [line for line in result.stderr.splitlines() if "NETWORK ATTEMPT" in line]
    assert attempts == []
    # the watch itself reports an attempt, and the namespace has no way out
    probe = subprocess.run(
        [*readonly_run.argv[: readonly_run.argv.index(str(PYTHON))], str(PYTHON), "-c",
         "import socket, urllib.request\n"
         "try:\n urllib.request.urlopen('https://huggingface.co', timeout=5)\n"
         "except OSError as err:\n print('unreachable', type(err).__name__)"],
        env=readonly_run.env, capture_output=True, text=True, timeout=60, cwd="/",
    )  # fmt: skip
    assert "NETWORK ATTEMPT" in probe.stderr and "unreachable" in probe.stdout, probe
