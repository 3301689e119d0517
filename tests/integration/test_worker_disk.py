"""The worker's data disk is full (a tmpfs of 1 MiB, filled up before the
worker starts): the worker still starts and runs tasks; a task's log —
whose bytes past the first 64 KiB are spooled to that disk — still arrives
whole and in order, kept in memory meanwhile; a task whose workspace cannot be downloaded there, or
whose artifacts cannot be packed there, is given back at once (its attempt
`lost`, with a reason that says the worker's disk is full) and queued again
as an infrastructure retry; and the worker goes on taking work. A worker
whose data disk is short of --min-free takes no task until there is room
again."""
import contextlib
import os
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

from conftest import have_root
from kilnapi import Server, submit, wait_for
from workerlib import WorkerProc, make_tar, task_log, upload_blob, wait_job

pytestmark = pytest.mark.skipif(not have_root(), reason="needs root (mounts, sandboxes)")


@contextlib.contextmanager
def small_disk(size):
    """A tmpfs of `size`, mounted for the test."""
    mnt = tempfile.mkdtemp(prefix="kiln-small-disk-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + size, "tmpfs", mnt], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", mnt])
        os.rmdir(mnt)


@contextlib.contextmanager
def server_and_worker(data, server_args, worker_args):
    srv = w = None
    try:
        srv = Server(args=server_args).start()
        w = WorkerProc(srv, "small-disk", args=["--pool", "host=1"] + worker_args, data=data).start()
        yield srv, w
    finally:
        if w:
            w.stop()
        if srv:
            srv.cleanup()


@pytest.fixture
def full_disk_worker():
    with small_disk("1m") as mnt:
        # Every byte is taken before the worker starts: it has to start, and
        # work, on a full disk.
        p = subprocess.run(["dd", "if=/dev/zero", "of=" + os.path.join(mnt, "filler"), "bs=64k"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert b"No space left on device" in p.stderr, p.stderr
        # One infrastructure retry: a task given back is run once more (here by
        # the same worker, the only one), then ends lost. --min-free 0: take
        # the tasks anyway, to see what a full disk does to them.
        with server_and_worker(os.path.join(mnt, "data"), ["--max-infra-retries", "1"],
                               ["--min-free", "0"]) as sw:
            yield sw


def test_full_data_disk_keeps_the_log_and_gives_back_what_it_cannot_hold(full_disk_worker):
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

    def given_back_twice(j, how):
        t = j["tasks"][0]
        assert t["state"] == "lost" and t["infra_retries"] == 1, (t, w.log())
        assert [a["state"] for a in t["attempts"]] == ["lost", "lost"], t["attempts"]
        for a in t["attempts"]:
            assert how in a["reason"] and "the worker's disk is full" in a["reason"], a["reason"]
        return t

    spec = {"name": "artifact", "steps": [{"run": "head -c 2000000 /dev/urandom > big.bin; echo made"}],
            "artifacts": ["big.bin"]}
    t = given_back_twice(wait_job(srv, submit(srv, spec)["id"], timeout=120), "collecting the artifacts failed")
    assert "No space left on device" in t["attempts"][0]["reason"]
    assert task_log(srv, t["id"], attempt=1).startswith(b"made\n")

    # 3 MB that do not compress: the download into the blob cache fails.
    digest = upload_blob(srv, make_tar([("big.bin", os.urandom(3000000))]))
    j = wait_job(srv, submit(srv, {"name": "workspace", "workspace": digest, "steps": [{"run": "ls"}]})["id"],
                 timeout=60)
    given_back_twice(j, "cannot fetch the workspace")

    # The worker is still there for the next one.
    j = wait_job(srv, submit(srv, {"name": "after", "steps": [{"run": "echo fine"}]})["id"], timeout=60)
    assert j["tasks"][0]["state"] == "succeeded", w.log()
    assert task_log(srv, j["tasks"][0]["id"]) == b"fine\n"


def metric(port, name):
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError("%s not in /metrics" % name)


def test_no_task_taken_while_the_disk_is_short_of_min_free():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with small_disk("32m") as mnt:
        filler = os.path.join(mnt, "filler")
        subprocess.run(["dd", "if=/dev/zero", "of=" + filler, "bs=1M", "count=24"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with server_and_worker(os.path.join(mnt, "data"), [],
                               ["--min-free", "16M", "--metrics", "127.0.0.1:%d" % port]) as (srv, w):
            assert wait_for(lambda: "Not taking tasks" in w.log(), timeout=10), w.log()
            assert "less than --min-free 16 MiB" in w.log(), w.log()
            assert metric(port, "kiln_worker_disk_short") == 1
            assert metric(port, "kiln_worker_data_free_bytes") < 16 << 20

            jid = submit(srv, {"name": "waits", "steps": [{"run": "echo ran"}]})["id"]
            time.sleep(3)
            assert srv.client().get("/api/v1/jobs/%d" % jid).json()["tasks"][0]["state"] == "queued"

            os.unlink(filler)
            j = wait_job(srv, jid, timeout=30)
            assert j["tasks"][0]["state"] == "succeeded", w.log()
            assert task_log(srv, j["tasks"][0]["id"]) == b"ran\n"
            assert "Taking tasks again" in w.log(), w.log()
            assert metric(port, "kiln_worker_disk_short") == 0
