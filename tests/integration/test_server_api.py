"""The documented API of `kiln server` over real HTTP, with its error cases."""
import hashlib
import http.client
import json
import os
import socket
import subprocess
import time

from kilnapi import SPEC, Client, Server, Worker, in_thread, kiln_out, server, submit, wait_for  # noqa: F401


def test_health_and_readiness(server):
    c = Client(server.port)
    assert c.get("/healthz").status == 200
    assert c.get("/readyz").json() == {"status": "ready"}


def test_missing_and_bad_token_is_401(server):
    c = Client(server.port)
    r = c.get("/api/v1/jobs")
    assert r.status == 401 and r.error()["code"] == "unauthorized"
    r = c.get("/api/v1/jobs", token="kiln_usr_" + "0" * 64)
    assert r.status == 401
    r = c.get("/api/v1/jobs", token="garbage")
    assert r.status == 401


def test_wrong_kind_is_403(server):
    user = server.token("user")
    worker = server.token("worker")
    r = server.client(worker).get("/api/v1/jobs")
    assert r.status == 403 and r.error()["kind"] == "worker"
    r = server.client(user).get("/api/v1/tokens")
    assert r.status == 403
    assert server.client(user).get("/api/v1/jobs").status == 200
    # A user may not register workers, a registration token may not claim.
    r = server.client(user).post("/api/v1/workers/register", {"name": "x"})
    assert r.status == 403
    r = server.client(worker).post("/api/v1/workers/claim", {"wait": 0})
    assert r.status == 403


def test_revoked_token_is_401(server):
    c = server.client()
    r = c.post("/api/v1/tokens", {"kind": "user", "name": "alice"})
    assert r.status == 201
    tok, tid = r.json()["token"], r.json()["id"]
    assert tok.startswith("kiln_usr_") and len(tok) == 9 + 64
    assert server.client(tok).get("/api/v1/jobs").status == 200
    listed = c.get("/api/v1/tokens").json()["tokens"]
    assert any(t["id"] == tid and t["name"] == "alice" for t in listed)
    assert all("token" not in t and "hash" not in t for t in listed)
    assert c.delete("/api/v1/tokens/%d" % tid).status == 200
    assert server.client(tok).get("/api/v1/jobs").status == 401
    assert c.delete("/api/v1/tokens/%d" % tid).status == 404


def test_tokens_never_logged_or_stored_in_clear(server):
    tok = server.token("user")
    server.client(tok).get("/api/v1/jobs")
    server.stop()
    with open(os.path.join(server.data, "kiln.db"), "rb") as f:
        db = f.read()
    for name in os.listdir(server.data):
        if name.startswith("kiln.db-"):
            with open(os.path.join(server.data, name), "rb") as f:
                db += f.read()
    assert tok.encode() not in db and server.admin.encode() not in db
    assert tok not in server.log()


def test_malformed_json_names_its_position(server):
    r = server.client().post("/api/v1/jobs", b'{"name": "x",\n "steps": [}', raw=True)
    assert r.status == 400
    e = r.error()
    assert e["code"] == "invalid_json" and e["line"] == 2 and e["column"] > 0 and e["position"] > 0
    assert "line 2" in e["message"]


def test_unknown_field_names_its_path(server):
    spec = {"name": "x", "steps": [{"run": "true", "tiemout": "3s"}]}
    r = server.client().post("/api/v1/jobs", spec)
    assert r.status == 400
    assert r.error()["path"] == "steps[0].tiemout"
    assert "tiemout" in r.error()["message"]
    w = Worker(server)
    r = w.c.post("/api/v1/workers/claim", {"wiat": 1})
    assert r.status == 400 and r.error()["code"] == "unknown_field" and r.error()["path"] == "wiat"


def test_json_depth_is_limited(server):
    body = b"[" * 100 + b"]" * 100
    r = server.client().post("/api/v1/jobs", b'{"a":' + body + b"}", raw=True)
    assert r.status == 400 and r.error()["code"] == "json_too_deep"


def test_oversized_body_refused_before_it_is_read():
    s = Server(args=["--max-body", "4K"]).start()
    try:
        sock = socket.create_connection(("127.0.0.1", s.port))
        sock.sendall(("POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                      "Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n" % s.admin).encode())
        sock.settimeout(5)
        data = sock.recv(4096)
        assert data.startswith(b"HTTP/1.1 413"), data
        assert b"body_too_large" in data or b"413" in data
        sock.close()
        r = s.client().post("/api/v1/jobs", {"name": "x" * 5000, "steps": [{"run": "true"}]})
        assert r.status == 413
        r = s.client().post("/api/v1/jobs", SPEC)
        assert r.status == 201
    finally:
        s.cleanup()


def test_unknown_endpoint_and_method(server):
    c = server.client()
    assert c.get("/api/v1/nope").status == 404
    assert c.request("PATCH", "/api/v1/jobs").status == 405
    assert c.get("/api/v1/jobs/999999").status == 404
    assert c.get("/api/v1/jobs/abc").status == 404


def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def test_blobs_verified_and_uploaded_once(server):
    user = server.token("user")
    c = server.client(user)
    data = os.urandom(300000)
    d = digest(data)
    assert c.request("HEAD", "/api/v1/blobs/" + d).status == 404
    r = c.post("/api/v1/blobs/missing", {"digests": [d, digest(b"other")]})
    assert r.status == 200 and r.json()["missing"] == [d, digest(b"other")]
    r = c.put("/api/v1/blobs/" + digest(b"not this"), data, raw=True)
    assert r.status == 400 and r.error()["code"] == "digest_mismatch" and r.error()["actual"] == d
    assert c.request("HEAD", "/api/v1/blobs/" + digest(b"not this")).status == 404
    r = c.put("/api/v1/blobs/" + d, data, raw=True)
    assert r.status == 201 and r.json()["size"] == len(data)
    r = c.put("/api/v1/blobs/" + d, data, raw=True)
    assert r.status == 200 and r.json()["created"] is False
    h = c.request("HEAD", "/api/v1/blobs/" + d)
    assert h.status == 200 and int(h.headers["Content-Length"]) == len(data)
    assert c.get("/api/v1/blobs/" + d).body == data
    assert c.post("/api/v1/blobs/missing", {"digests": [d]}).json()["missing"] == []
    assert c.put("/api/v1/blobs/sha256:xyz", b"", raw=True).status == 400
    leftovers = [n for n in os.listdir(os.path.join(server.data, "blobs", "sha256")) if n.startswith(".tmp")]
    assert leftovers == []
    # A job naming the workspace needs it uploaded.
    spec = dict(SPEC, workspace=d)
    assert c.post("/api/v1/jobs", spec).status == 201
    r = c.post("/api/v1/jobs", dict(SPEC, workspace=digest(b"absent")))
    assert r.status == 400 and r.error()["path"] == "workspace"


def test_blob_size_limit():
    s = Server(args=["--max-blob-size", "1K"]).start()
    try:
        data = b"x" * 2000
        r = s.client().put("/api/v1/blobs/" + digest(data), data, raw=True)
        assert r.status == 413
    finally:
        s.cleanup()


def test_jobs_submit_get_list_filter_paginate(server):
    c = server.client()
    ids = [submit(server, dict(SPEC, name="job%d" % (i % 2)))["id"] for i in range(7)]
    j = c.get("/api/v1/jobs/%d" % ids[0]).json()
    assert j["state"] == "queued" and j["tasks"][0]["name"] == "default" and j["tasks"][0]["state"] == "queued"
    page = c.get("/api/v1/jobs?limit=3").json()
    assert [x["id"] for x in page["jobs"]] == ids[::-1][:3] and page["next"] == ids[4]
    page2 = c.get("/api/v1/jobs?limit=3&before=%d" % page["next"]).json()
    assert [x["id"] for x in page2["jobs"]] == ids[::-1][3:6]
    named = c.get("/api/v1/jobs?name=job1").json()["jobs"]
    assert {x["id"] for x in named} == set(ids[1::2])
    assert c.get("/api/v1/jobs?state=succeeded").json()["jobs"] == []
    assert len(c.get("/api/v1/jobs?state=queued&limit=500").json()["jobs"]) == 7
    assert c.get("/api/v1/jobs?state=bogus").status == 400
    assert c.get("/api/v1/jobs?limit=0").status == 400


def test_matrix_expands_into_tasks(server):
    spec = dict(SPEC, matrix={"axes": {"py": ["3.11", "3.12"], "os": ["a", "b"]}})
    j = submit(server, spec)
    assert len(j["tasks"]) == 4
    assert len({t["name"] for t in j["tasks"]}) == 4


def test_cancel_and_retry(server):
    c = server.client()
    j = submit(server)
    r = c.post("/api/v1/jobs/%d/retry" % j["id"])
    assert r.status == 409
    r = c.post("/api/v1/jobs/%d/cancel" % j["id"])
    assert r.status == 200 and r.json()["state"] == "cancelled"
    assert r.json()["tasks"][0]["state"] == "cancelled"
    r = c.post("/api/v1/jobs/%d/retry" % j["id"])
    assert r.status == 200 and r.json()["retried"] == 1 and r.json()["state"] == "queued"
    w = Worker(server)
    a = w.claim()
    assert a["job"] == j["id"] and a["attempt"] == 1
    # Cancelling a running task reaches the worker through its heartbeat.
    assert w.heartbeat(a).json()["cancel"] is False
    c.post("/api/v1/jobs/%d/cancel" % j["id"])
    assert w.heartbeat(a).json()["cancel"] is True
    assert w.finish(a, "cancelled", 143).status == 200
    assert c.get("/api/v1/jobs/%d" % j["id"]).json()["state"] == "cancelled"
    assert c.post("/api/v1/jobs/99999/cancel").status == 404


def test_claim_wakes_at_once_when_a_task_is_queued(server):
    w = Worker(server)
    assert w.claim(wait=0) is None
    t, out = in_thread(w.claim, 20)
    time.sleep(0.5)
    start = time.time()
    j = submit(server)
    t.join(10)
    assert not t.is_alive()
    elapsed = time.time() - start
    assert out["value"]["job"] == j["id"]
    assert elapsed < 0.5, elapsed


def test_empty_claim_returns_204_after_wait(server):
    w = Worker(server)
    start = time.time()
    assert w.claim(wait=1) is None
    assert 0.9 < time.time() - start < 3


def test_worker_lifecycle_and_fencing(server):
    c = server.client()
    j = submit(server)
    w = Worker(server, labels={"os": "linux"})
    a = w.claim()
    assert a["task"]["name"] == "default" and a["fence"] >= 1 and a["lease_ttl"] > 0
    assert a["spec"]["steps"][0]["run"] == "true"
    t = c.get("/api/v1/jobs/%d" % j["id"]).json()["tasks"][0]
    assert t["state"] == "leased" and t["attempts"][0]["state"] == "leased"
    assert w.heartbeat(a).status == 200
    assert c.get("/api/v1/tasks/%d" % t["id"]).json()["state"] == "running"
    # Appends by offset: a repeat is harmless, a gap is refused with the offset.
    assert w.log(a, 0, b"hello ").json()["offset"] == 6
    assert w.log(a, 0, b"hello ").json()["offset"] == 6
    r = w.log(a, 9, b"zzz")
    assert r.status == 416 and r.error()["offset"] == 6
    assert w.log(a, 3, b"lo world\n").json()["offset"] == 12
    # The final length must match what the server holds.
    r = w.finish(a, log_size=20)
    assert r.status == 416 and r.error()["offset"] == 12
    # A wrong fence is stale.
    bad = dict(a, fence=a["fence"] + 1)
    assert w.heartbeat(bad).status == 409
    # A reason must be a string, the truncation flag a boolean.
    fin = "/api/v1/leases/%d/finish" % a["lease"]
    r = w.c.post(fin, {"fence": a["fence"], "state": "failed", "reason": 5})
    assert r.status == 400 and r.error()["path"] == "reason", r
    r = w.c.post(fin, {"fence": a["fence"], "state": "failed", "reason": "x" * 2000})
    assert r.status == 400 and r.error()["path"] == "reason", r
    r = w.c.post(fin, {"fence": a["fence"], "state": "failed", "log_truncated": "yes"})
    assert r.status == 400 and r.error()["path"] == "log_truncated", r
    r = w.c.post(fin, {"fence": a["fence"], "state": "warning", "exit_code": 42, "log_size": 12,
                       "reason": "step 1 exited with status 42", "log_truncated": True})
    assert r.status == 200, r
    assert w.finish(a).status == 409
    t = c.get("/api/v1/tasks/%d" % t["id"]).json()
    assert t["attempts"][0]["reason"] == "step 1 exited with status 42" and t["attempts"][0]["log_truncated"], t
    assert w.log(a, 12, b"late").status == 409
    assert w.heartbeat(a).status == 409
    j2 = c.get("/api/v1/jobs/%d" % j["id"]).json()
    assert j2["state"] == "warning" and j2["tasks"][0]["attempts"][0]["log_size"] == 12
    assert c.get("/api/v1/tasks/%d/log" % t["id"]).body == b"hello world\n"
    # Another worker cannot use this worker's lease.
    j3 = submit(server)
    a3 = w.claim()
    other = Worker(server, name="other")
    r = other.c.post("/api/v1/leases/%d/heartbeat" % a3["lease"], {"fence": a3["fence"]})
    assert r.status == 409
    assert j3["id"] == a3["job"]


def test_exit_codes_warning_skipped_and_user_retry(server):
    c = server.client()
    spec = dict(SPEC, retry={"max": 1, "on": ["failed"]})
    j = submit(server, spec)
    w = Worker(server)
    a = w.claim()
    assert w.finish(a, "failed", 1).status == 200
    a2 = w.claim()
    assert a2 and a2["job"] == j["id"] and a2["attempt"] == 2
    assert w.finish(a2, "failed", 1).status == 200
    jj = c.get("/api/v1/jobs/%d" % j["id"]).json()
    assert jj["state"] == "failed" and jj["tasks"][0]["user_retries"] == 1
    assert [x["state"] for x in jj["tasks"][0]["attempts"]] == ["failed", "failed"]
    assert w.claim() is None
    for state, code in (("warning", 42), ("skipped", 43)):
        j = submit(server)
        a = w.claim()
        assert w.finish(a, state, code).status == 200
        assert c.get("/api/v1/jobs/%d" % j["id"]).json()["state"] == state
    r = w.c.post("/api/v1/leases/1/finish", {"fence": 1, "state": "running"})
    assert r.status == 400


def test_a_task_given_back_is_an_infrastructure_retry(server):
    """A worker that cannot run a task (its disk is full, say) finishes it as
    lost: the attempt keeps the worker's reason, the task is queued again as
    an infrastructure retry, not against retry.max, and another claim gets it."""
    c = server.client()
    w = Worker(server, "giver")
    j = submit(server, dict(SPEC, retry={"max": 0}))
    a = w.claim()
    r = w.c.post("/api/v1/leases/%d/finish" % a["lease"],
                 {"fence": a["fence"], "state": "lost", "exit_code": -1, "reason": "the worker's disk is full"})
    assert r.status == 200, r
    t = c.get("/api/v1/jobs/%d" % j["id"]).json()["tasks"][0]
    assert t["state"] == "queued" and t["infra_retries"] == 1 and t["user_retries"] == 0, t
    assert t["attempts"][0]["state"] == "lost" and t["attempts"][0]["reason"] == "the worker's disk is full"
    a2 = w.claim()
    assert a2 and a2["attempt"] == 2
    assert w.finish(a2).status == 200
    assert c.get("/api/v1/jobs/%d" % j["id"]).json()["state"] == "succeeded"


def test_labels_and_slots_are_matched(server):
    c = server.client()
    j_gpu = submit(server, dict(SPEC, name="gpu", labels={"gpu": "yes"}))
    j_big = submit(server, dict(SPEC, name="big", tasks=[{"name": "big", "slots": 4}]))
    plain = Worker(server, name="plain", labels={"os": "linux"}, slots=2)
    assert plain.claim() is None
    gpu = Worker(server, name="gpu", labels={"os": "linux", "gpu": "yes"}, slots=8)
    a = gpu.claim(slots=2)
    assert a["job"] == j_gpu["id"]
    assert gpu.claim(slots=2) is None
    a = gpu.claim(slots=4)
    assert a["job"] == j_big["id"] and a["task"]["slots"] == 4
    workers = c.get("/api/v1/workers").json()["workers"]
    assert {w["name"] for w in workers} >= {"plain", "gpu"}


def read_stream(port, token, path, headers=None, limit=None, timeout=30):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    h = {"Authorization": "Bearer " + token}
    h.update(headers or {})
    conn.request("GET", path, headers=h)
    r = conn.getresponse()
    assert r.status == 200, r.read()
    out = b""
    while True:
        chunk = r.read1(65536) if hasattr(r, "read1") else r.read(1)
        if not chunk:
            break
        out += chunk
        if limit and limit(out):
            break
    conn.close()
    return out


def test_log_follow_is_byte_exact_resumable_and_ends_with_the_task(server):
    j = submit(server)
    task_id = j["tasks"][0]["id"]
    t, out = in_thread(read_stream, server.port, server.admin, "/api/v1/tasks/%d/log?follow=1" % task_id)
    w = Worker(server)
    a = w.claim()
    w.heartbeat(a)
    payload = bytes(range(256)) * 300 + b"\r\n\x00end"
    off = 0
    for i in range(0, len(payload), 7001):
        chunk = payload[i:i + 7001]
        r = w.log(a, off, chunk)
        assert r.status == 200
        off = r.json()["offset"]
        time.sleep(0.01)
    # Resume in the middle.
    t2, out2 = in_thread(read_stream, server.port, server.admin,
                         "/api/v1/tasks/%d/log?follow=1&offset=5000" % task_id)
    time.sleep(0.3)
    assert t.is_alive()
    assert w.finish(a, log_size=len(payload)).status == 200
    t.join(10)
    t2.join(10)
    assert not t.is_alive() and not t2.is_alive()
    assert out["value"] == payload
    assert out2["value"] == payload[5000:]
    static = server.client().get("/api/v1/tasks/%d/log?offset=100" % task_id)
    assert static.body == payload[100:] and static.headers["X-Kiln-Log-Size"] == str(len(payload))


def parse_sse(text):
    events = []
    for block in text.split("\n\n"):
        ev = {}
        for line in block.split("\n"):
            if line.startswith("id: "):
                ev["id"] = int(line[4:])
            elif line.startswith("event: "):
                ev["event"] = line[7:]
            elif line.startswith("data: "):
                ev["data"] = json.loads(line[6:])
        if "id" in ev:
            events.append(ev)
    return events


def test_event_stream_has_every_change_and_resumes(server):
    got = []
    t, out = in_thread(read_stream, server.port, server.admin, "/api/v1/events",
                       None, lambda b: b.count(b"\n\n") >= 6)
    j = submit(server)
    w = Worker(server)
    a = w.claim()
    w.heartbeat(a)
    w.finish(a)
    t.join(10)
    got = parse_sse(out["value"].decode())
    ids = [e["id"] for e in got]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    everything = parse_sse(read_stream(server.port, server.admin, "/api/v1/events?follow=0").decode())
    states = [(e["data"]["type"], e["data"]["state"]) for e in everything if e["data"].get("job", e["data"]["id"]) == j["id"]]
    for want in [("job", "queued"), ("task", "queued"), ("task", "leased"), ("job", "running"),
                 ("task", "running"), ("task", "succeeded"), ("job", "succeeded")]:
        assert want in states, (want, states)
    assert ("worker", "online") in [(e["data"]["type"], e["data"]["state"]) for e in everything]
    mid = everything[3]["id"]
    resumed = parse_sse(read_stream(server.port, server.admin, "/api/v1/events?follow=0",
                                    {"Last-Event-ID": str(mid)}).decode())
    assert [e["id"] for e in resumed] == [e["id"] for e in everything if e["id"] > mid]


def zst(data):
    return subprocess.run(["zstd", "-q", "-c"], input=data, stdout=subprocess.PIPE, check=True).stdout


def test_artifacts_upload_list_download(server):
    j = submit(server)
    w = Worker(server)
    a = w.claim()
    blob = zst(os.urandom(100000))
    path = "/api/v1/leases/%d/artifacts/out.tar.zst?fence=%d" % (a["lease"], a["fence"])
    r = w.c.put(path, blob, raw=True)
    assert r.status == 201, r
    assert r.json()["sha256"] == digest(blob) and r.json()["size"] == len(blob)
    r = w.c.put("/api/v1/leases/%d/artifacts/bad.tar.zst?fence=%d" % (a["lease"], a["fence"]), b"plain", raw=True)
    assert r.status == 400 and r.error()["code"] == "not_zstd"
    r = w.c.put("/api/v1/leases/%d/artifacts/..%%2Fx?fence=%d" % (a["lease"], a["fence"]), blob, raw=True)
    assert r.status in (400, 404)
    assert w.c.put(path.replace("fence=%d" % a["fence"], "fence=99"), blob, raw=True).status == 409
    w.finish(a)
    c = server.client()
    arts = c.get("/api/v1/jobs/%d/artifacts" % j["id"]).json()["artifacts"]
    assert len(arts) == 1 and arts[0]["name"] == "out.tar.zst" and "path" not in arts[0]
    d = c.get("/api/v1/artifacts/%d" % arts[0]["id"])
    assert d.body == blob and d.headers["X-Kiln-Digest"] == digest(blob)
    # Late uploads are fenced off.
    assert w.c.put(path, blob, raw=True).status == 409


def test_secrets(server):
    env = dict(os.environ, KILN_SERVER=server.url, KILN_TOKEN=server.admin)
    p = kiln_out("secret", "set", "SHORT", stdin=b"abc\n", env=env)
    assert p.returncode != 0 and b"shorter than 6" in p.stderr
    p = kiln_out("secret", "set", "DB_PASSWORD", stdin=b"hunter2-very-secret\n", env=env)
    assert p.returncode == 0, p.stderr
    p = kiln_out("secret", "set", "UNUSED", stdin=b"other-secret-value", env=env)
    assert p.returncode == 0, p.stderr
    p = kiln_out("secret", "list", env=env)
    assert p.stdout.decode().split() == ["DB_PASSWORD", "UNUSED"]
    r = server.client().put("/api/v1/secrets/X", {"value": "12345"})
    assert r.status == 400 and "shorter than 6" in r.error()["message"]
    assert server.client(server.token("user")).get("/api/v1/secrets").status == 403
    # Released only to the lease of a task that names it.
    r = server.client().post("/api/v1/jobs", dict(SPEC, secrets=["NOPE"]))
    assert r.status == 400 and r.error()["path"] == "secrets[0]"
    j1 = submit(server, dict(SPEC, secrets=["DB_PASSWORD"]))
    j2 = submit(server)
    assert "hunter2" not in json.dumps(server.client().get("/api/v1/jobs/%d" % j1["id"]).json())
    w = Worker(server)
    a1, a2 = w.claim(), w.claim()
    assert a1["job"] == j1["id"] and a1["secrets"] == {"DB_PASSWORD": "hunter2-very-secret"}
    assert a2["job"] == j2["id"] and a2["secrets"] == {}
    key = os.path.join(server.data, "secrets.key")
    assert os.stat(key).st_mode & 0o777 == 0o600
    with open(os.path.join(server.data, "kiln.db"), "rb") as f:
        assert b"hunter2" not in f.read()
    # Offline on the data directory, under the same key.
    p = kiln_out("secret", "set", "OFFLINE", "--data", server.data, stdin=b"set-offline-value")
    assert p.returncode == 0, p.stderr
    j3 = submit(server, dict(SPEC, secrets=["OFFLINE"]))
    a3 = w.claim()
    assert a3["job"] == j3["id"] and a3["secrets"] == {"OFFLINE": "set-offline-value"}
    p = kiln_out("secret", "delete", "OFFLINE", "--data", server.data)
    assert p.returncode == 0, p.stderr
    p = kiln_out("secret", "delete", "UNUSED", env=env)
    assert p.returncode == 0
    assert server.client().get("/api/v1/secrets").json()["secrets"] == ["DB_PASSWORD"]


def test_token_cli_offline_and_through_the_api(server):
    env = dict(os.environ, KILN_SERVER=server.url, KILN_TOKEN=server.admin)
    p = kiln_out("token", "create", "--kind", "user", "--name", "bob", env=env)
    assert p.returncode == 0, p.stderr
    tok = p.stdout.decode().strip()
    assert tok.startswith("kiln_usr_")
    assert server.client(tok).get("/api/v1/jobs").status == 200
    p = kiln_out("token", "list", "--json", env=env)
    toks = json.loads(p.stdout)["tokens"]
    bob = [t for t in toks if t["name"] == "bob"][0]
    assert kiln_out("token", "revoke", bob["id"], env=env).returncode == 0
    assert server.client(tok).get("/api/v1/jobs").status == 401
    p = kiln_out("token", "create", "--kind", "nope", env=env)
    assert p.returncode != 0
    p = kiln_out("token", "create", "--kind", "user", env=dict(env, KILN_TOKEN="kiln_usr_" + "1" * 64))
    assert p.returncode != 0 and b"token" in p.stderr


def test_metrics(server):
    submit(server, dict(SPEC, labels={"os": "linux"}))
    submit(server)
    w = Worker(server, labels={"os": "linux"})
    a = w.claim()
    w.finish(a)
    text = Client(server.port).get("/metrics").body.decode()
    assert 'kiln_queue_depth{labels=""} 1' in text
    assert "kiln_queue_oldest_age_seconds" in text
    assert "kiln_claims_total 1" in text
    assert "kiln_lease_expiries_total 0" in text
    assert 'kiln_http_requests_total{code="200"}' in text
    assert 'kiln_http_request_duration_seconds_count{route="POST /api/v1/workers/claim"} 1' in text


def test_slow_header_client_does_not_delay_others():
    s = Server(args=["--header-timeout", "3s"]).start()
    try:
        slow = socket.create_connection(("127.0.0.1", s.port))
        req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"

        def trickle():
            try:
                for b in req:
                    slow.send(bytes([b]))
                    time.sleep(1)
            except OSError:
                return "cut"
            return "sent"
        t, out = in_thread(trickle)
        time.sleep(1.5)
        c = s.client()
        for _ in range(20):
            start = time.time()
            assert c.get("/api/v1/jobs").status == 200
            assert time.time() - start < 0.5
        # The header deadline (3 s) cuts the trickler off long before it is done.
        t.join(15)
        assert not t.is_alive() and out.get("value") == "cut"
        slow.close()
        # Headers larger than the limit are refused, and others carry on.
        big = socket.create_connection(("127.0.0.1", s.port))
        big.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100000 + b"\r\n\r\n")
        big.settimeout(5)
        try:
            answer = big.recv(100)
        except ConnectionResetError:
            answer = b""
        assert answer == b"" or answer.split(b" ")[1] in (b"413", b"431"), answer
        big.close()
        assert c.get("/healthz").status == 200
    finally:
        s.cleanup()


def test_garbage_never_crashes_or_500s(server):
    import random
    rnd = random.Random(1234)
    w = Worker(server)
    submit(server)
    a = w.claim()
    # Valid claims among the garbage must not wait for work.
    submit(server, dict(SPEC, tasks=["t%d" % i for i in range(200)]))
    endpoints = [
        ("POST", "/api/v1/jobs", server.admin), ("POST", "/api/v1/tokens", server.admin),
        ("PUT", "/api/v1/secrets/S", server.admin), ("POST", "/api/v1/blobs/missing", server.admin),
        ("POST", "/api/v1/workers/register", server.admin), ("POST", "/api/v1/workers/claim", w.token),
        ("POST", "/api/v1/leases/%d/heartbeat" % a["lease"], w.token),
        ("POST", "/api/v1/leases/%d/finish" % a["lease"], w.token),
        ("POST", "/api/v1/leases/%d/log?fence=%d&offset=0" % (a["lease"], a["fence"]), w.token),
        ("GET", "/api/v1/jobs?limit=%s&before=%s", server.admin),
        ("GET", "/api/v1/tasks/%s/log?offset=%s&attempt=%s", server.admin),
    ]
    values = [None, True, 0, -1, 2 ** 63, 1e308, "", "x" * 5000, [], {}, [[[]]], {"a": {"b": 1}}]
    keys = ["name", "kind", "value", "digests", "labels", "slots", "wait", "fence", "state", "exit_code",
            "log_size", "steps", "tasks", "matrix", "retry", "secrets", "workspace"]
    c = Client(server.port)
    for i in range(500):
        method, path, tok = endpoints[i % len(endpoints)]
        if "%s" in path:
            path = path % tuple(rnd.choice(["1", "-1", "x", "99999999999999999999", "%00"]) for _ in range(path.count("%s")))
        kind = rnd.random()
        if kind < 0.3:
            body = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 200)))
        elif kind < 0.6:
            body = json.dumps(rnd.choice(values)).encode()
        else:
            body = json.dumps({rnd.choice(keys): rnd.choice(values) for _ in range(rnd.randint(1, 4))}).encode()
        r = c.request(method, path, body if method != "GET" else None, token=tok, raw=True)
        assert r.status < 500, (method, path, body[:100], r)
    assert Client(server.port).get("/healthz").status == 200
    assert server.proc.poll() is None
