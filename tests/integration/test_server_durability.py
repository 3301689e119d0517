"""What the server acknowledged survives `kill -9` and a full disk."""
import hashlib
import os
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import have_root
from kilnapi import SPEC, Server, Worker, submit


def zst(data):
    return subprocess.run(["zstd", "-q", "-c"], input=data, stdout=subprocess.PIPE, check=True).stdout


class Ledger:
    """What the server acknowledged, recorded by the clients."""

    def __init__(self):
        self.lock = threading.Lock()
        self.jobs = []
        self.finished = {}   # lease -> (task id, state)
        self.logs = {}       # lease -> (task id, attempt number, acked bytes)
        self.artifacts = {}  # lease -> (job, name, bytes)


def chaos_worker(srv, ledger, stop, seed):
    """Claims, appends, uploads and finishes until the server goes away."""
    try:
        w = Worker(srv, name="chaos%d" % seed)
    except OSError:
        return
    n = 0
    while not stop.is_set():
        try:
            a = w.claim(wait=0.2)
            if a is None:
                continue
            lease, data = a["lease"], b""
            for i in range(3):
                chunk = ("%d:%d:%d " % (seed, lease, i)).encode() * 50
                r = w.log(a, len(data), chunk)
                if r.status != 200:
                    break
                data += chunk
                with ledger.lock:
                    ledger.logs[lease] = (a["task"]["id"], a["attempt"], data)
            n += 1
            if n % 3 == 0:
                blob = zst(os.urandom(2000))
                r = w.c.put("/api/v1/leases/%d/artifacts/a.tar.zst?fence=%d" % (lease, a["fence"]), blob, raw=True)
                if r.status == 201:
                    with ledger.lock:
                        ledger.artifacts[lease] = (a["job"], "a.tar.zst", blob)
            state = "succeeded" if n % 2 else "failed"
            if w.finish(a, state, 0 if state == "succeeded" else 1).status == 200:
                with ledger.lock:
                    ledger.finished[lease] = (a["task"]["id"], state)
        except (OSError, ValueError, AssertionError):
            return


def test_kill_9_loses_nothing_acknowledged():
    s = Server().start()
    try:
        ledger = Ledger()
        for i in range(3):
            ledger.jobs.append(submit(s, dict(SPEC, name="crash%d" % i, tasks=["t%d" % k for k in range(100)]))["id"])
        # A worker that holds leases across the crash.
        keeper = Worker(s, name="keeper")
        held = []
        for _ in range(2):
            a = keeper.claim()
            assert keeper.heartbeat(a).status == 200
            assert keeper.log(a, 0, b"before crash\n").status == 200
            held.append(a)
        stop = threading.Event()
        threads = [threading.Thread(target=chaos_worker, args=(s, ledger, stop, i)) for i in range(4)]
        for t in threads:
            t.start()
        # Submissions race the crash too.
        submitter = s.client()
        end = time.time() + 1.5
        while time.time() < end:
            r = submitter.post("/api/v1/jobs", dict(SPEC, name="late"))
            if r.status == 201:
                ledger.jobs.append(r.json()["id"])
        assert len(ledger.finished) > 10, "the workers made progress before the crash"
        s.kill9()
        stop.set()
        for t in threads:
            t.join(30)

        s.start()
        c = s.client()
        for jid in ledger.jobs:
            assert c.get("/api/v1/jobs/%d" % jid).status == 200
        for lease, (task_id, state) in ledger.finished.items():
            t = c.get("/api/v1/tasks/%d" % task_id).json()
            att = [x for x in t["attempts"] if x["id"] == lease]
            assert att and att[0]["state"] == state, (lease, t)
        for lease, (task_id, number, data) in ledger.logs.items():
            got = c.get("/api/v1/tasks/%d/log?attempt=%d" % (task_id, number)).body
            assert got[:len(data)] == data, lease
        for lease, (job, name, blob) in ledger.artifacts.items():
            arts = [x for x in c.get("/api/v1/jobs/%d/artifacts" % job).json()["artifacts"] if x["attempt"] == lease]
            assert arts and arts[0]["sha256"] == "sha256:" + hashlib.sha256(blob).hexdigest()
            assert c.get("/api/v1/artifacts/%d" % arts[0]["id"]).body == blob
        events = c.get("/api/v1/events?follow=0").body.decode()
        ids = [int(line[4:]) for line in events.splitlines() if line.startswith("id: ")]
        assert ids == sorted(ids) and len(ids) == len(set(ids))
        # Leases held across the crash continue under the same fence.
        for a in held:
            assert keeper.heartbeat(a).status == 200
            r = keeper.log(a, 13, b"after restart\n")
            assert r.status == 200 and r.json()["offset"] == 27
            assert keeper.finish(a, log_size=27).status == 200
            t = c.get("/api/v1/tasks/%d" % a["task"]["id"]).json()
            assert t["state"] == "succeeded" and len(t["attempts"]) == 1
            log = c.get("/api/v1/tasks/%d/log" % a["task"]["id"]).body
            assert log == b"before crash\nafter restart\n"
        # Interrupted uploads were swept at start; nothing temporary is visible.
        for root, _, files in os.walk(s.data):
            assert not [f for f in files if f.startswith(".tmp-")], root
        assert all(not x["name"].startswith(".") for j in ledger.jobs
                   for x in c.get("/api/v1/jobs/%d/artifacts" % j).json()["artifacts"])
    finally:
        s.cleanup()


def fill(path):
    """Fills the file system holding path; returns the filler file."""
    filler = os.path.join(path, "filler")
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    for size in (1 << 16, 512, 1):
        try:
            while True:
                os.write(fd, b"\0" * size)
        except OSError:
            pass
    os.close(fd)
    return filler


@pytest.mark.skipif(not have_root(), reason="needs root to mount a small tmpfs")
def test_full_disk_refuses_writes_with_507_and_recovers():
    mnt = tempfile.mkdtemp(prefix="kiln-tmpfs-")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", mnt]).returncode != 0:
        os.rmdir(mnt)
        pytest.skip("cannot mount tmpfs here")
    s = Server(data=os.path.join(mnt, "data")).start()
    try:
        c = s.client()
        j = submit(s)
        w = Worker(s)
        a = w.claim()
        assert w.heartbeat(a).status == 200
        assert w.log(a, 0, b"acknowledged\n").status == 200
        blob = os.urandom(1000)
        d = "sha256:" + hashlib.sha256(blob).hexdigest()
        assert c.put("/api/v1/blobs/" + d, blob, raw=True).status == 201

        filler = fill(mnt)
        r = c.post("/api/v1/jobs", SPEC)
        assert r.status == 507, r
        assert r.error()["code"] == "insufficient_storage" and "out of space" in r.error()["message"]
        r = w.log(a, 13, b"x" * 200000)
        assert r.status == 507, r
        big = os.urandom(300000)
        r = c.put("/api/v1/blobs/sha256:" + hashlib.sha256(big).hexdigest(), big, raw=True)
        assert r.status == 507, r
        # Reads keep working.
        assert c.get("/api/v1/jobs/%d" % j["id"]).status == 200
        assert c.get("/api/v1/jobs").status == 200
        assert c.get("/api/v1/tasks/%d/log" % a["task"]["id"]).body == b"acknowledged\n"
        assert c.get("/api/v1/blobs/" + d).body == blob
        assert c.get("/healthz").status == 200

        os.unlink(filler)
        r = c.post("/api/v1/jobs", SPEC)
        assert r.status == 201, r
        assert w.log(a, 13, b"more\n").json()["offset"] == 18
        assert w.finish(a, log_size=18).status == 200
        assert c.get("/api/v1/tasks/%d/log" % a["task"]["id"]).body == b"acknowledged\nmore\n"
        assert c.get("/api/v1/jobs/%d" % j["id"]).json()["state"] == "succeeded"
        assert c.put("/api/v1/blobs/sha256:" + hashlib.sha256(big).hexdigest(), big, raw=True).status == 201
        # And after a restart, too.
        s.stop()
        s.start()
        assert s.client().get("/api/v1/jobs/%d" % j["id"]).json()["state"] == "succeeded"
    finally:
        s.cleanup()
        subprocess.run(["umount", "-l", mnt])
        os.rmdir(mnt)
