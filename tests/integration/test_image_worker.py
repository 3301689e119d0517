"""The worker and image revisions: the warm pool follows `current`, a worker
pulls the images it is configured with (or a task names) from the server by
digest, and scheduled rebuilds take one of the worker's slots."""
import json
import os
import shutil
import socket
import threading
import time

import pytest

from conftest import kiln, needs_root
from imagelib import busybox_tar, show
from kilnapi import Server, submit, wait_for
from workerlib import WorkerProc, task_log, wait_job, worker_metrics

pytestmark = needs_root


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]






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
        assert wait_for(lambda: worker_metrics(port)[ready] == 2, timeout=30), w.log()
        assert run_rev(srv) == b"A\n"
        assert wait_for(lambda: worker_metrics(port)[ready] == 2, timeout=30), w.log()
        assert worker_metrics(port)["kiln_worker_pool_retired_total"] == 0

        # B becomes current while two warm sandboxes of A wait: the next job
        # (submitted at once, before the pool's own check) runs B.
        imp(data, "bb", busybox_tar(tmpdir_path, "B"))
        assert run_rev(srv) == b"B\n"
        assert wait_for(lambda: worker_metrics(port)["kiln_worker_pool_retired_total"] == 2, timeout=10), w.log()
        assert "Retiring warm sandbox" in w.log()
        assert wait_for(lambda: worker_metrics(port)[ready] == 2, timeout=30), w.log()

        # A rollback is a switch like any other; the pool refills with A
        # without a job asking.
        assert kiln("image", "rollback", "bb", "--data", data).returncode == 0
        assert wait_for(lambda: worker_metrics(port)["kiln_worker_pool_retired_total"] == 4, timeout=10), w.log()
        assert wait_for(lambda: worker_metrics(port)[ready] == 2, timeout=30), w.log()
        assert run_rev(srv) == b"A\n"
        assert worker_metrics(port)["kiln_worker_pool_retired_total"] == 4
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


BASE_CACHE = os.environ.get("KILN_TEST_IMAGE_CACHE", "/var/tmp/kiln-test-image-cache")
REBUILD_SCRIPT = "date +%s.%N > /etc/rev\n"


def image_events(srv):
    body = srv.client().get("/api/v1/events?after=0&follow=0").body.decode()
    return [e for e in (json.loads(l[6:]) for l in body.splitlines() if l.startswith("data: "))
            if e["type"] == "image"]


def next_minute():
    """HH:MM of the next minute boundary at least 20 s away, and its time."""
    t = time.time()
    at = (int(t) // 60 + 1) * 60
    if at - t < 20:
        at += 60
    return time.strftime("%H:%M", time.localtime(at)), at


def test_scheduled_rebuild_runs_once_in_one_slot(tmpdir_path):
    if not shutil.which("mmdebstrap"):
        pytest.skip("mmdebstrap is not installed (tools/install-deps installs it)")
    data = os.path.join(tmpdir_path, "wdata")
    script = os.path.join(tmpdir_path, "rev.sh")
    with open(script, "w") as f:
        f.write(REBUILD_SCRIPT)
    # A minbase image whose recipe only runs a one-line script: with the
    # base cache a rebuild takes seconds.
    p = kiln("image", "build", "rb", "--data", data, "--base-cache", BASE_CACHE, "--from", "debian:bookworm",
             "--script", script, "--validate", "test -s /etc/rev", "--tries", "1", "--json", timeout=900)
    if p.returncode != 0:
        out = json.loads(p.stdout) if p.stdout.strip() else {}
        if out.get("failed_step") == "base":
            pytest.skip("mmdebstrap could not build bookworm (Debian mirror unreachable?)")
        raise AssertionError(p.stderr)
    before = show(data, "rb")
    assert before["current"] == 1

    srv = Server().start()
    port = free_port()
    hhmm, at = next_minute()
    w = WorkerProc(srv, "rebuilder", data=data, args=[
        "--image", "rb", "--default-image", "rb", "--pool", "rb=1", "--slots", "2", "--claim-wait", "2s",
        "--rebuild", "rb@" + hhmm, "--base-cache", BASE_CACHE, "--metrics", "127.0.0.1:%d" % port]).start()
    samples, stop = [], threading.Event()

    def sample():
        while not stop.is_set():
            try:
                m = worker_metrics(port)
                samples.append((time.time(), m["kiln_worker_rebuild_running"], m["kiln_worker_tasks_running"],
                                m["kiln_worker_slots_used"]))
            except OSError:
                pass
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    jobs = []
    try:
        # Keep the worker busy (a few sleeping jobs queued at all times)
        # until the rebuild has run and a little after.
        deadline = at + 240
        while time.time() < deadline:
            queued = sum(1 for j in jobs[-6:] if j["state"] == "queued")
            if queued < 3:
                jobs.append(submit(srv, {"name": "busy", "steps": [{"run": "sleep 2"}]}))
            jobs[-6:] = [srv.client().get("/api/v1/jobs/%d" % j["id"]).json() for j in jobs[-6:]]
            m = worker_metrics(port)
            if m["kiln_worker_rebuilds_total"] >= 1 and m["kiln_worker_rebuild_running"] == 0:
                break
            time.sleep(0.3)
        after_rebuild = time.time()
        # It runs once: still one a few seconds later, with jobs still coming.
        for _ in range(10):
            jobs.append(submit(srv, {"name": "busy", "steps": [{"run": "sleep 1"}]}))
            time.sleep(0.5)
        m = worker_metrics(port)
        assert m["kiln_worker_rebuilds_total"] == 1 and m["kiln_worker_rebuilds_failed_total"] == 0, w.log()
    finally:
        stop.set()
        sampler.join()
    try:
        during = [s for s in samples if s[1] == 1]
        assert during, "the rebuild was never seen running: %s" % w.log()
        assert max(s[3] for s in samples) <= 2, "more slots used than the worker has"
        assert max(s[2] for s in during) <= 1, "two tasks ran during the rebuild"
        # Busy meanwhile: one task alongside the rebuild, two without it.
        assert any(s[2] == 1 for s in during)
        assert any(s[1] == 0 and s[2] == 2 for s in samples)
        assert during[0][0] >= at - 1, "the rebuild started before %s" % hhmm

        now = show(data, "rb")
        assert now["current"] == 2 and now["last_build"]["status"] == "succeeded", now
        assert now["last_build"]["revision"] == 2 and now["last_build"]["seconds"] > 0
        assert at - 1 <= now["last_build"]["finished"] <= after_rebuild + 1
        rev2 = now["revisions"][-1]
        assert rev2["recipe"] == before["revisions"][0]["recipe"] and rev2["validation"]["passed"] == 1
        evs = image_events(srv)
        assert [(e["state"], e["id"], e["scheduled"]) for e in evs] == [("build_succeeded", 2, True)], evs
        assert evs[0]["digest"] == now["digest"] and evs[0]["seconds"] > 0
        assert "Scheduled rebuild of 'rb' succeeded" in w.log()

        # The pool follows the new revision.
        with open(os.path.join(rev2["rootfs"], "etc", "rev"), "rb") as f:
            rev2_text = f.read()
        t = wait_job(srv, submit(srv, {"name": "rev", "steps": [{"run": "cat /etc/rev"}]})["id"], timeout=120)
        assert task_log(srv, t["tasks"][0]["id"]) == rev2_text
    finally:
        w.stop()
        srv.cleanup()
