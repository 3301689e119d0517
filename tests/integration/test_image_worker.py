"""The worker and image revisions: the warm pool follows `current`, a worker
pulls the images it is configured with (or a task names) from the server by
digest."""
import json
import os
import socket
import subprocess
import urllib.request

import pytest

from conftest import kiln, needs_root
from imagelib import show
from kilnapi import Server, submit, wait_for
from sandboxlib import make_busybox_rootfs
from workerlib import WorkerProc, task_log, wait_job

pytestmark = needs_root


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics(port):
    """{'name{labels}': value} of a worker's /metrics."""
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def busybox_tar(tmp, tag):
    root = make_busybox_rootfs(os.path.join(tmp, "bb-" + tag))
    with open(os.path.join(root, "etc", "rev"), "w") as f:
        f.write(tag + "\n")
    path = os.path.join(tmp, "bb-%s.tar" % tag)
    subprocess.run(["tar", "-C", root, "-cf", path, "."], check=True)
    return path


def imp(data, name, src):
    p = kiln("image", "import", name, src, "--data", data)
    assert p.returncode == 0, p.stderr


def run_rev(srv, image="bb", labels=None):
    spec = {"name": "rev", "image": image, "steps": [{"run": "cat /etc/rev"}]}
    if labels:
        spec["labels"] = labels
    t = wait_job(srv, submit(srv, spec)["id"], timeout=60)["tasks"][0]
    log = task_log(srv, t["id"])
    assert t["state"] == "succeeded", log
    return log


def test_warm_pool_follows_the_current_revision(tmpdir_path):
    data = os.path.join(tmpdir_path, "data")
    imp(data, "bb", busybox_tar(tmpdir_path, "A"))
    srv = Server().start()
    port = free_port()
    image = os.path.join(data, "images", "bb", "current", "rootfs")
    w = WorkerProc(srv, "follow", args=["--image", "bb=" + image, "--pool", "bb=2", "--slots", "2",
                                        "--metrics", "127.0.0.1:%d" % port]).start()
    ready = 'kiln_worker_pool_ready{image="bb"}'
    try:
        assert wait_for(lambda: metrics(port)[ready] == 2, timeout=30), w.log()
        assert run_rev(srv) == b"A\n"
        assert wait_for(lambda: metrics(port)[ready] == 2, timeout=30), w.log()
        assert metrics(port)["kiln_worker_pool_retired_total"] == 0

        # B becomes current while two warm sandboxes of A wait: the next job
        # (submitted at once, before the pool's own check) runs B.
        imp(data, "bb", busybox_tar(tmpdir_path, "B"))
        assert run_rev(srv) == b"B\n"
        assert wait_for(lambda: metrics(port)["kiln_worker_pool_retired_total"] == 2, timeout=10), w.log()
        assert "Retiring warm sandbox" in w.log()
        assert wait_for(lambda: metrics(port)[ready] == 2, timeout=30), w.log()

        # A rollback is a switch like any other; the pool refills with A
        # without a job asking.
        assert kiln("image", "rollback", "bb", "--data", data).returncode == 0
        assert wait_for(lambda: metrics(port)["kiln_worker_pool_retired_total"] == 4, timeout=10), w.log()
        assert wait_for(lambda: metrics(port)[ready] == 2, timeout=30), w.log()
        assert run_rev(srv) == b"A\n"
        assert metrics(port)["kiln_worker_pool_retired_total"] == 4
    finally:
        w.stop()
        srv.cleanup()


def push(data, srv, name):
    p = kiln("image", "push", name, "--data", data, "--server", srv.url, "--token", srv.admin, "--json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)["digest"]


def reported(srv, worker, image):
    ws = srv.client().get("/api/v1/workers").json()["workers"]
    w = [w for w in ws if w["name"] == worker][-1]
    return w["info"]["images"].get(image, {})


def test_worker_pulls_what_it_follows_and_what_a_task_names(tmpdir_path):
    builder = os.path.join(tmpdir_path, "builder")
    imp(builder, "bb", busybox_tar(tmpdir_path, "A"))
    srv = Server().start()
    w = None
    try:
        digest_a = push(builder, srv, "bb")
        w = WorkerProc(srv, "puller", args=["--image", "bb", "--pool", "bb=1", "--image-poll", "1s",
                                            "--default-image", "bb"]).start()
        local = os.path.join(w.data, "images")
        # Pulled at start, before the pool prepares anything, and reported.
        assert run_rev(srv) == b"A\n"
        assert show(os.path.dirname(local), "bb")["digest"] == digest_a
        assert "Image 'bb': pulling %s" % digest_a in w.log()
        assert wait_for(lambda: reported(srv, "puller", "bb").get("digest") == digest_a, timeout=10), \
            srv.client().get("/api/v1/workers").json()

        # A new revision published on the server is pulled by the next poll;
        # the warm sandbox of A is retired.
        imp(builder, "bb", busybox_tar(tmpdir_path, "B"))
        digest_b = push(builder, srv, "bb")
        assert wait_for(lambda: show(os.path.dirname(local), "bb")["digest"] == digest_b, timeout=20), w.log()
        assert run_rev(srv) == b"B\n"
        assert wait_for(lambda: reported(srv, "puller", "bb").get("digest") == digest_b, timeout=10)
        # Unpacked once: one revision per digest, and a rollback published
        # on the server switches back without fetching anything.
        kiln("image", "rollback", "bb", "--data", builder, check=True)
        push(builder, srv, "bb")
        assert wait_for(lambda: show(os.path.dirname(local), "bb")["digest"] == digest_a, timeout=20), w.log()
        assert [r["digest"] for r in show(os.path.dirname(local), "bb")["revisions"]] == [digest_a, digest_b]
        assert "already here" in w.log()
        assert run_rev(srv) == b"A\n"

        # A task naming an image the worker does not serve: pulled for it.
        imp(builder, "cc", busybox_tar(tmpdir_path, "C"))
        digest_c = push(builder, srv, "cc")
        assert run_rev(srv, image="cc") == b"C\n"
        assert show(os.path.dirname(local), "cc")["digest"] == digest_c
        assert wait_for(lambda: reported(srv, "puller", "cc").get("digest") == digest_c, timeout=10)

        # One nobody has fails with a message saying so.
        j = submit(srv, {"name": "none", "image": "nosuch", "steps": [{"run": "true"}]})
        t = wait_job(srv, j["id"], timeout=30)["tasks"][0]
        assert t["state"] == "failed"
        assert b"neither this worker nor the server has that image" in task_log(srv, t["id"])
    finally:
        if w:
            w.stop()
        srv.cleanup()

