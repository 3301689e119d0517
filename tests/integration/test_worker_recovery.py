"""The worker survives its own death, the server's and a SIGTERM: no process
left behind, no log byte lost, leftovers removed at the next start."""
import os
import signal
import time
import uuid

import pytest

from conftest import have_root
from kilnapi import Server, submit, wait_for
from sandboxlib import kiln_cgroup_parents
from workerlib import (WorkerProc, artifact_files, artifacts, job, processes_with_env, sandbox_leftovers, spawner_pid,
                       spawner_pid_or_none, task, task_log, wait_job, wait_task_state)

pytestmark = pytest.mark.skipif(not have_root(), reason="needs root (sandboxes: namespaces, cgroups, mounts)")


@pytest.fixture
def srv():
    s = Server(args=["--lease-ttl", "3s"]).start()
    yield s
    s.cleanup()


def cgroups_named(names):
    found = []
    for parent in kiln_cgroup_parents():
        for n in names:
            if os.path.isdir(os.path.join(parent, n)):
                found.append(os.path.join(parent, n))
    return found


def start_crash_task(srv, a, mark):
    """A task that runs a process tree until attempt 2; returns it once it
    runs, with the sandboxes the worker holds then."""
    spec = {"name": "crash", "env": {"MARK": mark},
            "steps": [{"run": 'if [ "$KILN_ATTEMPT" = 1 ]; then echo started; sleep 300 & sleep 300; fi; '
                              'echo "done on attempt $KILN_ATTEMPT"'}]}
    j = submit(srv, spec)
    tid = j["tasks"][0]["id"]
    assert wait_for(lambda: task_log(srv, tid) == b"started\n", timeout=20), a.log()
    assert len(processes_with_env(mark)) >= 2
    before = sandbox_leftovers(a.sandbox_dir)
    assert before
    return tid, before


def finished_elsewhere(srv, tid):
    t = wait_task_state(srv, tid, ("queued",), timeout=15)
    assert t["attempts"][0]["state"] == "lost", t
    b = WorkerProc(srv, "b").start()
    try:
        t = wait_task_state(srv, tid, ("succeeded",), timeout=30)
        assert t["attempts"][-1]["worker"] != t["attempts"][0]["worker"]
        assert task_log(srv, tid) == b"done on attempt 2\n"
    finally:
        b.stop()


def test_kill9_mid_task(srv):
    mark = "kiln-crash-" + uuid.uuid4().hex[:10]
    a = WorkerProc(srv, "a", args=["--pool", "host=1"]).start()
    try:
        tid, before = start_crash_task(srv, a, mark)
        ids = [e.split(".")[0] for e in before]
        spawner = spawner_pid(a)
        a.kill9()
        # Every process of the task dies with the worker, and its spawner
        # (kiln __sandboxd) removes what the sandboxes held on the host.
        assert wait_for(lambda: processes_with_env(mark) == [], timeout=5), processes_with_env(mark)
        assert wait_for(lambda: sandbox_leftovers(a.sandbox_dir) == [], timeout=10), sandbox_leftovers(a.sandbox_dir)
        assert cgroups_named(ids) == []
        assert wait_for(lambda: not os.path.exists("/proc/%d" % spawner), timeout=10)
        finished_elsewhere(srv, tid)
    finally:
        a.stop()


def test_kill9_of_worker_and_spawner_leftovers_removed_at_next_start(srv):
    mark = "kiln-crash-" + uuid.uuid4().hex[:10]
    a = WorkerProc(srv, "a", args=["--pool", "host=1"]).start()
    try:
        tid, before = start_crash_task(srv, a, mark)
        # Both at once, as a machine's OOM killer or a kill of the whole
        # process group would: nobody is left to remove the host-side state.
        os.kill(spawner_pid(a), signal.SIGKILL)
        a.kill9()
        assert wait_for(lambda: processes_with_env(mark) == [], timeout=5), processes_with_env(mark)
        assert sandbox_leftovers(a.sandbox_dir) == before  # until the next start
        finished_elsewhere(srv, tid)
        # The restarted worker removes the leftovers, logging each.
        a2 = WorkerProc(srv, "a", args=["--pool", "host=1"], data=a.data, sandbox_dir=a.sandbox_dir)
        a2.token = a.token
        a2.start()
        try:
            log = a2.log()
            # State directories are named ID.SLOT.NETWORK; cgroups and the log use the ID.
            ids = [e.split(".")[0] for e in before]
            for sid in ids:
                assert "Removed leftover sandbox %s" % sid in log, log
            assert not any(s in sandbox_leftovers(a.sandbox_dir) for s in before)
            assert cgroups_named(ids) == []
        finally:
            a2.stop()
            assert a2.wait() == 0
    finally:
        a.stop()


def test_server_killed_and_restarted_mid_task(srv):
    w = WorkerProc(srv, "w", args=["--pool", "host=1"]).start()
    try:
        script = ("mkdir -p out; i=0; while [ $i -lt 400 ]; do "
                  "echo \"line $i $(head -c 48 /dev/urandom | base64 -w0)\"; "
                  "head -c 300 /dev/urandom; i=$((i+1)); sleep 0.01; done | tee out/copy.bin")
        spec = {"name": "restart", "steps": [{"run": script}], "artifacts": ["out/copy.bin"]}
        j = submit(srv, spec)
        tid = j["tasks"][0]["id"]
        assert wait_for(lambda: len(task_log(srv, tid)) > 10000, timeout=20), w.log()
        srv.kill9()
        time.sleep(2)
        srv.start()
        t = wait_task_state(srv, tid, ("succeeded", "failed", "lost"), timeout=60)
        assert t["state"] == "succeeded", (t, w.log())
        arts = artifacts(srv, j["id"])
        copy = artifact_files(srv, arts[0]["id"])["out/copy.bin"]
        log = task_log(srv, tid)
        assert len(copy) > 100000
        assert log == copy
    finally:
        w.stop()


def test_sigterm_drains_then_second_sigterm_requeues(srv):
    w = WorkerProc(srv, "drain", args=["--pool", "host=1", "--claim-wait", "2s"]).start()
    try:
        j = submit(srv, {"name": "drain", "steps": [{"run": "echo begin; sleep 2; echo end"}]})
        tid = j["tasks"][0]["id"]
        assert wait_for(lambda: task_log(srv, tid) == b"begin\n", timeout=20), w.log()
        w.signal(signal.SIGTERM)
        time.sleep(0.3)
        # Drained: no new claims.
        j2 = submit(srv, {"name": "after", "steps": [{"run": "echo later"}]})
        assert w.wait(timeout=20) == 0, w.log()
        assert task(srv, tid)["state"] == "succeeded"
        assert task_log(srv, tid) == b"begin\nend\n"
        assert job(srv, j2["id"])["tasks"][0]["state"] == "queued"
    finally:
        w.stop()

    mark = "kiln-drain-" + uuid.uuid4().hex[:10]
    w = WorkerProc(srv, "drain2", args=["--pool", "host=1"]).start()
    other = None
    try:
        # The queued job from above is taken first.
        wait_job(srv, j2["id"])
        spec = {"name": "requeue", "env": {"MARK": mark},
                "steps": [{"run": 'if [ "$KILN_ATTEMPT" = 1 ]; then echo begin; sleep 300; fi; echo finished'}]}
        j = submit(srv, spec)
        tid = j["tasks"][0]["id"]
        assert wait_for(lambda: task_log(srv, tid) == b"begin\n", timeout=20), w.log()
        w.signal(signal.SIGTERM)
        time.sleep(0.3)
        w.signal(signal.SIGTERM)
        assert w.wait(timeout=20) == 0, w.log()
        assert processes_with_env(mark) == []
        assert sandbox_leftovers(w.sandbox_dir) == []
        other = WorkerProc(srv, "elsewhere").start()
        t = wait_task_state(srv, tid, ("succeeded",), timeout=30)
        assert t["attempts"][0]["state"] == "lost"
        assert t["attempts"][-1]["worker"] != t["attempts"][0]["worker"]
    finally:
        w.stop()
        if other:
            other.stop()


def test_lapsed_lease_kills_the_task_and_is_not_reported(srv):
    """A worker frozen past its lease (SIGSTOP) finds the lease gone when it
    runs again: it kills the task's sandbox at once and reports nothing, so
    the newer attempt on another worker stands."""
    mark = "kiln-lapse-" + uuid.uuid4().hex[:10]
    a = WorkerProc(srv, "frozen", args=["--pool", "host=1"]).start()
    b = None
    try:
        spec = {"name": "lapse", "env": {"MARK": mark},
                "steps": [{"run": 'if [ "$KILN_ATTEMPT" = 1 ]; then echo started; sleep 300; fi; echo second'}]}
        j = submit(srv, spec)
        tid = j["tasks"][0]["id"]
        assert wait_for(lambda: task_log(srv, tid) == b"started\n", timeout=20), a.log()
        a.signal(signal.SIGSTOP)
        try:
            t = wait_task_state(srv, tid, ("queued",), timeout=15)
            assert t["attempts"][0]["state"] == "lost"
            b = WorkerProc(srv, "fresh").start()
            wait_task_state(srv, tid, ("succeeded",), timeout=30)
        finally:
            a.signal(signal.SIGCONT)
        assert wait_for(lambda: processes_with_env(mark) == [], timeout=3), processes_with_env(mark)
        assert wait_for(lambda: "stopping it" in a.log(), timeout=3), a.log()
        time.sleep(1)
        t = task(srv, tid)
        assert t["state"] == "succeeded" and t["attempts"][0]["state"] == "lost", t
        assert task_log(srv, tid) == b"second\n"
        assert a.proc.poll() is None  # the worker itself carries on
    finally:
        a.stop()
        if b:
            b.stop()


def test_spawner_killed_alone_is_replaced(srv):
    a = WorkerProc(srv, "a", args=["--pool", "host=1"]).start()
    try:
        j = submit(srv, {"name": "before", "steps": [{"run": "echo one"}]})
        assert wait_job(srv, j["id"])["state"] == "succeeded"
        old = spawner_pid(a)
        os.kill(old, signal.SIGKILL)
        # The warm sandbox died with it: the pool notices within a second,
        # discards it and refills through a new spawner.
        assert wait_for(lambda: "Warm sandbox" in a.log() and "died before use" in a.log(), timeout=10), a.log()
        assert wait_for(lambda: spawner_pid_or_none(a) not in (None, old), timeout=10), a.log()
        j = submit(srv, {"name": "after", "steps": [{"run": "echo two"}]})
        assert wait_job(srv, j["id"])["state"] == "succeeded", a.log()
        assert task_log(srv, j["tasks"][0]["id"]) == b"two\n"
        assert "The sandbox spawner died; starting another." in a.log()
        assert wait_for(lambda: len(sandbox_leftovers(a.sandbox_dir)) <= 1, timeout=10), \
            sandbox_leftovers(a.sandbox_dir)
    finally:
        a.stop()
        assert a.wait() == 0
