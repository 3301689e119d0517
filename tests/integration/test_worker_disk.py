"""The worker's data disk is full while tasks run (a tmpfs of 1 MiB, filled
up after the worker started): a task's log — whose bytes past the first
64 KiB are spooled to that disk — still arrives whole and in order, kept in
memory meanwhile; a workspace that cannot be downloaded there, and an
artifact that cannot be packed there, fail their tasks at once with a reason
that says the worker's disk is full; and the worker goes on taking work."""
import os
import subprocess
import tempfile

import pytest

from conftest import have_root
from kilnapi import Server, submit
from workerlib import WorkerProc, make_tar, task_log, upload_blob, wait_job

pytestmark = pytest.mark.skipif(not have_root(), reason="needs root (mounts, sandboxes)")


@pytest.fixture
def full_disk_worker():
    mnt = tempfile.mkdtemp(prefix="kiln-small-disk-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt], check=True)
    srv = w = None
    try:
        srv = Server().start()
        w = WorkerProc(srv, "small-disk", args=["--pool", "host=1"], data=os.path.join(mnt, "data")).start()
        # Every byte the worker could still write is taken.
        p = subprocess.run(["dd", "if=/dev/zero", "of=" + os.path.join(mnt, "filler"), "bs=64k"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert b"No space left on device" in p.stderr, p.stderr
        yield srv, w
    finally:
        if w:
            w.stop()
        if srv:
            srv.cleanup()
        subprocess.run(["umount", mnt])
        os.rmdir(mnt)


def test_full_data_disk_keeps_the_log_and_says_why_artifacts_fail(full_disk_worker):
    srv, w = full_disk_worker

    # ~2.9 MB of output: all but the first 64 KiB would go through the spool file.
    j = wait_job(srv, submit(srv, {"name": "long-log", "steps": [{"run": "seq 1 400000"}]})["id"], timeout=120)
    t = j["tasks"][0]
    assert t["state"] == "succeeded", (t, w.log())
    expected = "".join("%d\n" % i for i in range(1, 400001)).encode()
    log = task_log(srv, t["id"])
    assert len(log) == len(expected) and log == expected, (len(log), len(expected))
    assert not t["attempts"][-1]["log_truncated"]
    assert "keeping the rest of it in memory" in w.log(), w.log()

    spec = {"name": "artifact", "steps": [{"run": "head -c 2000000 /dev/urandom > big.bin; echo made"}],
            "artifacts": ["big.bin"]}
    j = wait_job(srv, submit(srv, spec)["id"], timeout=120)
    t = j["tasks"][0]
    assert t["state"] == "failed", (t, w.log())
    reason = t["attempts"][-1]["reason"]
    assert "the worker's disk is full" in reason and "No space left on device" in reason, reason
    assert task_log(srv, t["id"]).startswith(b"made\n")

    # 3 MB that do not compress: the download into the blob cache fails.
    digest = upload_blob(srv, make_tar([("big.bin", os.urandom(3000000))]))
    j = wait_job(srv, submit(srv, {"name": "workspace", "workspace": digest, "steps": [{"run": "ls"}]})["id"],
                 timeout=60)
    t = j["tasks"][0]
    assert t["state"] == "failed", (t, w.log())
    reason = t["attempts"][-1]["reason"]
    assert "cannot fetch the workspace" in reason and "the worker's disk is full" in reason, reason

    # The worker is still there for the next one.
    j = wait_job(srv, submit(srv, {"name": "after", "steps": [{"run": "echo fine"}]})["id"], timeout=60)
    assert j["tasks"][0]["state"] == "succeeded", w.log()
    assert task_log(srv, j["tasks"][0]["id"]) == b"fine\n"
