"""Hostile workspace archives are refused by the worker and nothing is
written outside the task's workspace."""
import io
import os
import subprocess
import tarfile
import tempfile
import uuid

import pytest

from conftest import have_root
from kilnapi import Server, submit
from workerlib import WorkerProc, make_tar, task_log, upload_blob, wait_job

pytestmark = pytest.mark.skipif(not have_root(), reason="needs root (sandboxes: namespaces, cgroups, mounts)")

MARK = "kiln-escape-" + uuid.uuid4().hex[:12]
HOST_DIR = os.path.join(tempfile.gettempdir(), MARK)


@pytest.fixture(scope="module")
def env():
    os.makedirs(HOST_DIR, exist_ok=True)
    srv = Server().start()
    w = WorkerProc(srv, "ws", args=["--pool", "host=2", "--slots", "4", "--workspace-max-files", "5000",
                                    "--workspace-max-bytes", "256M"]).start()
    yield srv, w
    w.stop()
    srv.cleanup()
    subprocess.run(["rm", "-rf", HOST_DIR])


def ti(name, type_=tarfile.REGTYPE, **kw):
    t = tarfile.TarInfo(name)
    t.type = type_
    for k, v in kw.items():
        setattr(t, k, v)
    return t


def sparse_bomb():
    d = tempfile.mkdtemp()
    try:
        with open(os.path.join(d, "bomb"), "wb") as f:
            f.truncate(1 << 30)
        out = os.path.join(d, "bomb.tar")
        subprocess.run(["tar", "--sparse", "-cf", out, "-C", d, "bomb"], check=True)
        with open(out, "rb") as f:
            return f.read()
    finally:
        subprocess.run(["rm", "-rf", d])


def many_files(n):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for i in range(n):
            t.addfile(ti("f/%05d" % i, size=0), io.BytesIO(b""))
    return buf.getvalue()


CASES = {
    "absolute": lambda: make_tar([(HOST_DIR + "/absolute", b"x")]),
    "dotdot": lambda: make_tar([("../../../../../../.." + HOST_DIR + "/dotdot", b"x")]),
    "symlink-then-file": lambda: make_tar([
        [ti("link", tarfile.SYMTYPE, linkname=HOST_DIR), None],
        ("link/through-symlink", b"x")]),
    "hardlink-outside": lambda: make_tar([
        [ti("hl", tarfile.LNKTYPE, linkname="../../../../../etc/passwd"), None]]),
    "device-node": lambda: make_tar([[ti("null", tarfile.CHRTYPE, devmajor=1, devminor=3), None]]),
    "10000-files": lambda: many_files(10000),
    "sparse-1G": sparse_bomb,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_archive_is_refused(env, case):
    srv, w = env
    digest = upload_blob(srv, CASES[case]())
    spec = {"name": "hostile-" + case, "workspace": digest,
            "steps": [{"run": "echo step ran; ls -la /workspace"}]}
    j = wait_job(srv, submit(srv, spec)["id"], timeout=60)
    t = j["tasks"][0]
    log = task_log(srv, t["id"])
    assert t["state"] == "failed", (case, log)
    assert b"the workspace archive was refused" in log, log
    assert b"step ran" not in log
    assert os.listdir(HOST_DIR) == [], os.listdir(HOST_DIR)
    assert os.path.exists("/etc/passwd")


def test_good_archive_with_inner_links(env):
    srv, w = env
    digest = upload_blob(srv, make_tar([
        ("dir/file.txt", b"content\n"),
        [ti("dir/rel-link", tarfile.SYMTYPE, linkname="file.txt"), None],
        [ti("hard", tarfile.LNKTYPE, linkname="dir/file.txt"), None]]))
    spec = {"name": "good", "workspace": digest, "steps": [{"run": "cat dir/rel-link hard"}]}
    j = wait_job(srv, submit(srv, spec)["id"], timeout=60)
    t = j["tasks"][0]
    assert t["state"] == "succeeded", task_log(srv, t["id"])
    assert task_log(srv, t["id"]) == b"content\ncontent\n"
