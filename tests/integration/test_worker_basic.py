"""kiln worker against a real server with real sandboxes: statuses, logs,
artifacts, workspaces, timeouts, cancel, secrets."""
import base64
import json
import socket
import time
import urllib.parse
import urllib.request

import pytest

from conftest import have_root
from kilnapi import Server, submit, wait_for
from workerlib import (WorkerProc, err_frame, artifact_files, artifacts, make_tar, split_streams, task, task_log,
                       upload_blob, wait_job, worker_metrics, wait_task_state)

pytestmark = pytest.mark.skipif(not have_root(), reason="needs root (sandboxes: namespaces, cgroups, mounts)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


METRICS_PORT = free_port()


@pytest.fixture(scope="module")
def env():
    srv = Server(args=["--lease-ttl", "6s"]).start()
    w = WorkerProc(srv, "basic", args=["--pool", "host=2", "--slots", "4", "--kill-grace", "1s",
                                       "--metrics", "127.0.0.1:%d" % METRICS_PORT,
                                       "--workspace-max-files", "5000", "--workspace-max-bytes", "256M",
                                       "--log-max", "16M"]).start()
    yield srv, w
    w.stop()
    srv.cleanup()


def test_statuses_logs_and_artifacts(env):
    srv, w = env
    script = ("echo \"out $CODE\"; echo \"err $CODE\" >&2; mkdir -p out; "
              "printf 'artifact %s' \"$CODE\" > out/result.txt; ln -s /etc/passwd out/escape; "
              "exit $CODE")
    spec = {"name": "statuses", "steps": [{"name": "main", "run": script}],
            "artifacts": ["out/**"],
            "matrix": {"axes": {"CODE": ["0", "1", "42", "43"]}}}
    j = submit(srv, spec)
    j = wait_job(srv, j["id"])
    states = {t["env"]["CODE"]: t["state"] for t in j["tasks"]}
    assert states == {"0": "succeeded", "1": "failed", "42": "warning", "43": "skipped"}, (states, w.log())
    arts = {a["task"]: a for a in artifacts(srv, j["id"])}
    for t in j["tasks"]:
        code = t["env"]["CODE"]
        log = task_log(srv, t["id"])
        assert log.startswith(("out %s\n" % code).encode() + err_frame(("err %s\n" % code).encode())), log
        assert t["exit_code"] == int(code)
        files = artifact_files(srv, arts[t["id"]]["id"])
        assert files == {"out/result.txt": ("artifact %s" % code).encode()}, files
    logs = {t["env"]["CODE"]: task_log(srv, t["id"]) for t in j["tasks"]}
    assert logs["0"] == b"out 0\n" + err_frame(b"err 0\n")
    assert split_streams(logs["0"]) == (b"out 0\n", b"err 0\n")
    assert b"exited with status 1" in logs["1"]


def test_binary_output_and_long_line(env):
    srv, w = env
    # 5 MB without a newline, then every byte value.
    script = ("head -c 5000000 /dev/zero | tr '\\0' x; "
              "printf \"$(i=0; while [ $i -lt 256 ]; do printf '\\\\%03o' $i; i=$((i+1)); done)\"")
    j = submit(srv, {"name": "binary", "steps": [{"run": script}]})
    j = wait_job(srv, j["id"])
    t = j["tasks"][0]
    assert t["state"] == "succeeded", w.log()
    log = task_log(srv, t["id"])
    assert log == b"x" * 5000000 + bytes(range(256))


def test_large_stderr_in_frames(env):
    srv, w = env
    # More than one frame's worth of stderr, stdout on either side.
    script = "echo before; head -c 300000 /dev/zero | tr '\\0' e >&2; echo after"
    j = wait_job(srv, submit(srv, {"name": "stderr", "steps": [{"run": script}]})["id"])
    t = j["tasks"][0]
    assert t["state"] == "succeeded", w.log()
    out, err = split_streams(task_log(srv, t["id"]))
    assert out == b"before\nafter\n" and err == b"e" * 300000, (out[:100], len(err))


def test_workspace_and_env(env):
    srv, w = env
    ws = make_tar([("src/hello.sh", b"#!/bin/sh\necho hello from the workspace $GREETING\n")])
    digest = upload_blob(srv, ws)
    spec = {"name": "ws", "workspace": digest, "env": {"GREETING": "job"},
            "steps": [{"run": "./src/hello.sh; pwd"}]}
    j = wait_job(srv, submit(srv, spec)["id"])
    t = j["tasks"][0]
    assert t["state"] == "succeeded", (task_log(srv, t["id"]), w.log())
    assert task_log(srv, t["id"]) == b"hello from the workspace job\n/workspace\n"


def test_step_timeout_is_timed_out(env):
    srv, w = env
    start = time.time()
    spec = {"name": "slow", "steps": [{"run": "trap '' TERM; sleep 60", "timeout": "1s"}]}
    j = wait_job(srv, submit(srv, spec)["id"], timeout=30)
    t = j["tasks"][0]
    assert t["state"] == "timed_out", (t, w.log())
    assert time.time() - start < 15
    assert b"timeout" in task_log(srv, t["id"])
    assert t["attempts"][-1]["reason"] == "step 1 was stopped: it ran past its timeout", t


def test_cancel_reaches_the_task_within_2s(env):
    srv, w = env
    spec = {"name": "cancel", "steps": [{"run": "echo started; sleep 120"}]}
    j = submit(srv, spec)
    tid = j["tasks"][0]["id"]
    assert wait_for(lambda: task_log(srv, tid) if task(srv, tid)["attempts"] else None, timeout=15)
    assert wait_for(lambda: task_log(srv, tid) == b"started\n", timeout=15)
    t0 = time.time()
    r = srv.client().post("/api/v1/jobs/%d/cancel" % j["id"])
    assert r.status == 200, r
    t = wait_task_state(srv, tid, ("cancelled",), timeout=15)
    # The sleep dies of SIGTERM at once: the cancel's latency is the heartbeat's.
    assert time.time() - t0 < 2.5, time.time() - t0
    assert t["state"] == "cancelled"
    assert "cancelled" in t["attempts"][-1]["reason"], t


def test_oom_is_failed_with_reason(env):
    srv, w = env
    spec = {"name": "oom", "resources": {"memory": "128M"},
            "steps": [{"run": "python3 -c 'b = bytearray(1 << 30)'"}]}
    j = wait_job(srv, submit(srv, spec)["id"], timeout=60)
    t = j["tasks"][0]
    assert t["state"] == "failed", t
    assert b"out of memory" in task_log(srv, t["id"]), task_log(srv, t["id"])
    reason = t["attempts"][-1]["reason"]
    assert "out of memory" in reason and str(128 << 20) in reason, t


LISTENER = ("import socket, time; time.sleep(0.3); s = socket.socket(); "
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', 5432)); s.listen(); "
            "time.sleep(60)")


def test_service_health_gates_steps(env):
    srv, w = env
    spec = {"name": "svc",
            "services": [{"name": "web", "run": "sleep 0.3; exec python3 -m http.server 8080 --bind 127.0.0.1",
                          "health": {"http": "http://127.0.0.1:8080/", "interval": "100ms", "timeout": "1s",
                                     "retries": 50}},
                         {"name": "db", "argv": ["python3", "-c", LISTENER],
                          "health": {"tcp": "127.0.0.1:5432", "interval": "100ms", "timeout": "1s",
                                     "retries": 50}}],
            "steps": [{"run": "python3 -c 'import urllib.request as u; print(u.urlopen(\"http://127.0.0.1:8080/\").status)'"
                       "; echo steps ran"}]}
    j = wait_job(srv, submit(srv, spec)["id"], timeout=60)
    t = j["tasks"][0]
    assert t["state"] == "succeeded", (task_log(srv, t["id"]), w.log())
    assert task_log(srv, t["id"]) == b"200\nsteps ran\n"
    spec = {"name": "svc-bad",
            "services": [{"name": "db", "run": "echo db is broken; sleep 60",
                          "health": {"command": "false", "interval": "100ms", "timeout": "1s", "retries": 3}}],
            "steps": [{"run": "echo must not run"}]}
    j = wait_job(srv, submit(srv, spec)["id"], timeout=60)
    t = j["tasks"][0]
    log = task_log(srv, t["id"])
    assert t["state"] == "failed", log
    assert b"service 'db' did not become healthy" in log and b"db is broken" in log, log
    assert b"must not run" not in log


def test_log_cap_marks_and_keeps_status(env):
    srv, w = env
    spec = {"name": "big", "steps": [{"run": "head -c 20000000 /dev/zero | tr '\\0' y; echo done"}]}
    j = wait_job(srv, submit(srv, spec)["id"], timeout=60)
    t = j["tasks"][0]
    assert t["state"] == "succeeded"
    log = task_log(srv, t["id"])
    assert log.startswith(b"y" * (16 << 20))
    assert b"[kiln] the log reached its limit of 16777216 bytes" in log[16 << 20:]
    assert t["attempts"][-1]["log_truncated"] is True and t["attempts"][-1]["reason"] is None, t
    small = wait_job(srv, submit(srv, {"name": "small", "steps": [{"run": "echo hi"}]})["id"])["tasks"][0]
    assert small["attempts"][-1]["log_truncated"] is False, small


SECRET = "s3cr3t-V@lue/with+chars"


def test_secrets_are_masked_in_every_form(env):
    srv, w = env
    r = srv.client().put("/api/v1/secrets/TOKEN", {"value": SECRET})
    assert r.status == 200, r
    r = srv.client().put("/api/v1/secrets/SHORT", {"value": "abc"})
    assert r.status == 400 and "6" in r.error()["message"], r
    half = len(SECRET) // 2
    script = "\n".join([
        'echo "raw: $TOKEN"',
        'printf "%s" "$TOKEN" | base64',
        'printf "x%s" "$TOKEN" | base64',
        'printf "xy%s" "$TOKEN" | base64',
        "python3 -c 'import os,urllib.parse; print(urllib.parse.quote(os.environ[\"TOKEN\"], safe=\"\"))'",
        "python3 -c 'import os,json; print(json.dumps({\"t\": os.environ[\"TOKEN\"]}))'",
        "printf 'split: %s' '" + SECRET[:half] + "'; sleep 0.5; printf '%s\\n' '" + SECRET[half:] + "'",
        # Split on stderr, with stdout written in between.
        "printf 'e-split: %s' '" + SECRET[:half] + "' >&2; sleep 0.3; echo between; sleep 0.3; "
        "printf '%s\\n' '" + SECRET[half:] + "' >&2",
    ])
    spec = {"name": "secrets", "secrets": ["TOKEN"], "steps": [{"run": script}]}
    j = wait_job(srv, submit(srv, spec)["id"], timeout=60)
    t = j["tasks"][0]
    log = task_log(srv, t["id"])
    assert t["state"] == "succeeded", log
    forms = [SECRET, urllib.parse.quote(SECRET, safe=""), json.dumps(SECRET)[1:-1]]
    for pre in ("", "x", "xy"):
        b = base64.b64encode((pre + SECRET).encode()).decode()
        forms.append(b[len(pre) * 4 // 3 + 4: -4])  # the stable core
    for f in forms:
        assert f.encode() not in log, (f, log)
    assert log.count(b"***") >= 7, log
    assert b"raw: ***" in log and b"split: ***" in log, log
    out, err = split_streams(log)
    for f in forms:
        assert f.encode() not in out and f.encode() not in err, (f, out, err)
    assert err == b"e-split: ***\n" and out.endswith(b"split: ***\nbetween\n"), (out, err)


def test_metrics(env):
    srv, w = env
    wait_job(srv, submit(srv, {"name": "m", "steps": [{"run": "echo hi"}]})["id"])
    values = worker_metrics(METRICS_PORT)
    assert values['kiln_worker_pool_target{image="host"}'] == 2
    assert 0 <= values['kiln_worker_pool_ready{image="host"}'] <= 2
    assert values["kiln_worker_sandbox_prepare_seconds_count"] >= 2
    assert values["kiln_worker_claim_to_start_seconds_count"] >= 1
    assert values["kiln_worker_bytes_masked_total"] > 0  # the secrets test ran before


def test_many_concurrent_tasks_never_wedge(env):
    """Tasks start and end on four slots while the pool refills: threads are
    created and joined all the time next to the sandboxes' clones."""
    srv, w = env
    t0 = time.time()
    ids = [submit(srv, {"name": "many", "steps": [{"run": "echo $KILN_TASK_ID"}], "artifacts": ["none"]})["id"]
           for _ in range(80)]
    for jid in ids:
        j = wait_job(srv, jid, timeout=max(5, 90 - (time.time() - t0)))
        t = j["tasks"][0]
        assert t["state"] == "succeeded", (t, w.log()[-2000:])
        assert task_log(srv, t["id"]) == b"%d\n" % t["id"]
