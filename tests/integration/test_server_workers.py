"""Workers racing for tasks, and leases that expire."""
import threading
import time

from kilnapi import SPEC, Server, Worker, in_thread, submit, wait_for


def test_two_workers_race_for_1000_tasks_each_claimed_and_finished_once():
    s = Server().start()
    try:
        jobs = []
        for j in range(4):
            spec = dict(SPEC, name="race%d" % j, tasks=["t%d" % i for i in range(250)])
            jobs.append(submit(s, spec))
        all_tasks = {t["id"] for j in jobs for t in j["tasks"]}
        assert len(all_tasks) == 1000
        workers = [Worker(s, name="racer%d" % i) for i in range(2)]
        claimed = [[], []]
        errors = []

        def run(i):
            w = workers[i]
            while True:
                a = w.claim(wait=0.3)
                if a is None:
                    return
                claimed[i].append(a["task"]["id"])
                r = w.finish(a)
                if r.status != 200:
                    errors.append(r)
        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors
        both = claimed[0] + claimed[1]
        assert len(both) == 1000 and set(both) == all_tasks
        assert claimed[0] and claimed[1], "both workers got work"
        c = s.client()
        # Concurrent requests shared commits.
        m = dict(line.split(" ") for line in c.get("/metrics").body.decode().splitlines()
                 if line.startswith("kiln_store_"))
        assert int(m["kiln_store_write_ops_total"]) > int(m["kiln_store_commits_total"])
        for j in jobs:
            jj = c.get("/api/v1/jobs/%d" % j["id"]).json()
            assert jj["state"] == "succeeded"
            for t in jj["tasks"]:
                assert t["state"] == "succeeded" and len(t["attempts"]) == 1
    finally:
        s.cleanup()


def test_silent_worker_loses_its_lease_and_another_takes_over():
    s = Server(args=["--lease-ttl", "3s"]).start()
    try:
        j = submit(s)
        first = Worker(s, name="first")
        a = first.claim()
        assert first.heartbeat(a).status == 200
        assert first.log(a, 0, b"partial").status == 200
        silent_since = time.time()
        second = Worker(s, name="second")
        t, out = in_thread(second.claim, 15)
        t.join(20)
        b = out["value"]
        took = time.time() - silent_since
        assert b is not None and b["task"]["id"] == a["task"]["id"]
        assert b["fence"] > a["fence"] and b["attempt"] == 2
        assert took <= 3 + 2, took
        task = s.client().get("/api/v1/tasks/%d" % a["task"]["id"]).json()
        assert [x["state"] for x in task["attempts"]] == ["lost", "leased"]
        assert task["attempts"][0]["reason"] == "lease expired"
        assert task["infra_retries"] == 1 and task["user_retries"] == 0
        # The first worker's late calls are fenced off.
        assert first.log(a, 7, b" more").status == 409
        assert first.finish(a).status == 409
        assert first.heartbeat(a).status == 409
        assert second.finish(b).status == 200
        jj = s.client().get("/api/v1/jobs/%d" % j["id"]).json()
        assert jj["state"] == "succeeded"
        # The lost attempt's bytes are still readable, on their own attempt.
        log1 = s.client().get("/api/v1/tasks/%d/log?attempt=1" % a["task"]["id"])
        assert log1.body == b"partial"
        metrics = s.client().get("/metrics").body.decode()
        assert "kiln_lease_expiries_total 1" in metrics
        ev = s.client().get("/api/v1/events?follow=0").body.decode()
        assert '"type":"attempt"' in ev and '"state":"lost"' in ev
    finally:
        s.cleanup()


def test_infrastructure_retries_are_capped():
    s = Server(args=["--lease-ttl", "1s", "--max-infra-retries", "1"]).start()
    try:
        j = submit(s, dict(SPEC, retry={"max": 5}))
        w = Worker(s)
        a1 = w.claim()
        a2 = w.claim(wait=5)
        assert a2 and a2["attempt"] == 2
        task_id = a1["task"]["id"]

        def ended():
            t = s.client().get("/api/v1/tasks/%d" % task_id).json()
            return t if t["state"] == "lost" else None
        t = wait_for(ended, timeout=8)
        assert t and [x["state"] for x in t["attempts"]] == ["lost", "lost"]
        assert t["user_retries"] == 0
        assert s.client().get("/api/v1/jobs/%d" % j["id"]).json()["state"] == "lost"
        assert w.claim() is None
    finally:
        s.cleanup()


def test_silent_worker_goes_offline_and_comes_back():
    s = Server(args=["--worker-timeout", "2s"]).start()
    try:
        w = Worker(s, name="sleepy")
        poller = Worker(s, name="poller")
        t, out = in_thread(poller.claim, 6)

        def state(wid):
            ws = s.client().get("/api/v1/workers").json()["workers"]
            return [x["state"] for x in ws if x["id"] == wid][0]
        assert state(w.id) == "online"
        assert wait_for(lambda: state(w.id) == "offline", timeout=6)
        # A worker inside a long poll is alive.
        assert state(poller.id) == "online"
        t.join(10)
        assert w.claim() is None
        assert state(w.id) == "online"
        ev = s.client().get("/api/v1/events?follow=0").body.decode()
        assert '"type":"worker","id":%d,"state":"offline"' % w.id in ev
        assert '"type":"worker","id":%d,"state":"offline"' % poller.id not in ev
    finally:
        s.cleanup()
