"""Helpers for worker tests: a real `kiln server` plus real `kiln worker`
processes, each with its own data and sandbox directories."""
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import tarfile
import tempfile
import time
import urllib.request

from conftest import KILN
from kilnapi import wait_for

FINAL = ("succeeded", "failed", "warning", "skipped", "cancelled", "timed_out", "lost")


class WorkerProc:
    """A `kiln worker` process."""

    def __init__(self, srv, name="w", args=(), data=None, sandbox_dir=None, nsenter=None, url=None):
        self.srv = srv
        self.name = name
        self.tmp = tempfile.mkdtemp(prefix="kiln-worker-")
        self.data = data or os.path.join(self.tmp, "data")
        self.sandbox_dir = sandbox_dir or os.path.join(self.tmp, "sandboxes")
        self.token = srv.token("worker", name)
        self.args = list(args)
        self.nsenter = nsenter
        self.url = url or srv.url
        self.proc = None
        self.errpath = os.path.join(self.tmp, "stderr")

    def start(self):
        env = dict(os.environ, KILN_SANDBOX_DIR=self.sandbox_dir)
        cmd = [KILN, "worker", "--server", self.url, "--token", self.token, "--name", self.name,
               "--data", self.data] + self.args
        if self.nsenter:
            # Only the network namespace: `ip netns exec` would also remount
            # /sys and hide the cgroup file systems.
            cmd = ["nsenter", "--net=/run/netns/" + self.nsenter] + cmd
        self.err = open(self.errpath, "ab")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.err, env=env)
        ok = wait_for(lambda: "Registered as worker" in self.log() or self.proc.poll() is not None, timeout=15)
        if not ok or self.proc.poll() is not None:
            # Never leave a worker (and its warm sandboxes) behind a failed start.
            self.stop()
            raise AssertionError("the worker did not start: " + self.log())
        return self

    def log(self):
        try:
            with open(self.errpath, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=30):
        return self.proc.wait(timeout=timeout)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def sha256_digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def upload_blob(srv, data):
    d = sha256_digest(data)
    r = srv.client().request("PUT", "/api/v1/blobs/" + d, data, raw=True,
                             headers={"Content-Type": "application/octet-stream"})
    assert r.status in (200, 201), r
    return d


def make_tar(entries):
    """entries: list of (name, content bytes) or tarfile.TarInfo objects with data."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for e in entries:
            if isinstance(e, tuple):
                name, content = e
                ti = tarfile.TarInfo(name)
                ti.size = len(content)
                ti.mode = 0o755
                t.addfile(ti, io.BytesIO(content))
            else:
                ti, content = e if isinstance(e, list) else (e, None)
                t.addfile(ti, io.BytesIO(content) if content is not None else None)
    return buf.getvalue()


def task(srv, tid):
    r = srv.client().get("/api/v1/tasks/%d" % tid)
    assert r.status == 200, r
    return r.json()


def job(srv, jid):
    r = srv.client().get("/api/v1/jobs/%d" % jid)
    assert r.status == 200, r
    return r.json()


def wait_job(srv, jid, timeout=60):
    def done():
        j = job(srv, jid)
        return j if all(t["state"] in FINAL for t in j["tasks"]) and j["state"] not in ("queued", "running") \
            else None
    j = wait_for(done, timeout=timeout, interval=0.1)
    assert j, "job %d did not finish: %r" % (jid, job(srv, jid))
    return j


def wait_task_state(srv, tid, states, timeout=60):
    t = wait_for(lambda: task(srv, tid) if task(srv, tid)["state"] in states else None,
                 timeout=timeout, interval=0.1)
    assert t, "task %d never reached %r: %r" % (tid, states, task(srv, tid))
    return t


def task_log(srv, tid, attempt=None):
    q = "" if attempt is None else "?attempt=%d" % attempt
    r = srv.client().get("/api/v1/tasks/%d/log%s" % (tid, q))
    assert r.status == 200, r
    return r.body


ERR_FRAME = re.compile(rb"\x1b\]kiln;err;(\d+)\x07")


def split_streams(log):
    """A stored log's stdout and stderr: stderr's bytes come in frames
    (ESC ]kiln;err;N BEL, then N bytes; docs/api.md)."""
    out, err, pos = b"", b"", 0
    while True:
        m = ERR_FRAME.search(log, pos)
        if not m:
            return out + log[pos:], err
        n = int(m.group(1))
        out += log[pos:m.start()]
        err += log[m.end():m.end() + n]
        assert m.end() + n <= len(log), "a frame runs past the end of the log"
        pos = m.end() + n


def err_frame(b):
    return b"\x1b]kiln;err;%d\x07" % len(b) + b


def worker_metrics(port):
    """{'name{labels}': value} of a worker's /metrics."""
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def artifacts(srv, jid):
    r = srv.client().get("/api/v1/jobs/%d/artifacts" % jid)
    assert r.status == 200, r
    return r.json()["artifacts"]


def artifact_files(srv, art_id):
    """The files of an artifact tar.zst as {name: bytes}."""
    r = srv.client().get("/api/v1/artifacts/%d" % art_id)
    assert r.status == 200, r
    tar = subprocess.run(["zstd", "-dc"], input=r.body, stdout=subprocess.PIPE, check=True).stdout
    out = {}
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        for m in t.getmembers():
            if m.isfile():
                out[m.name] = t.extractfile(m).read()
    return out


def sandbox_leftovers(sandbox_dir):
    if not os.path.isdir(sandbox_dir):
        return []
    return [e for e in os.listdir(sandbox_dir) if not e.startswith(".")]


def processes_with_env(marker):
    """PIDs whose environment holds marker (a job's own variable)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % pid, "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def dumps(o):
    return json.dumps(o)


def sleep(s):
    time.sleep(s)


def spawner_pid(worker):
    """The worker's sandbox spawner (kiln __sandboxd): its child named so."""
    pid = spawner_pid_or_none(worker)
    if pid is None:
        raise AssertionError("worker %d has no sandbox spawner" % worker.proc.pid)
    return pid


def spawner_pid_or_none(worker):
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        state = stat[stat.rindex(")") + 2:].split()[0]
        if comm == "kiln-sandboxd" and ppid == worker.proc.pid and state != "Z":
            return int(d)
    return None
