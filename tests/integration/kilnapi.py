"""Helpers for driving a real `kiln server` over loopback HTTP: start one on a
free port with its own data directory, make requests, play a worker."""
import http.client
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import KILN

SPEC = {"name": "t", "steps": [{"name": "s", "run": "true"}]}


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def error(self):
        return self.json()["error"]

    def __repr__(self):
        return "<%d %r>" % (self.status, self.body[:300])


class Client:
    """One keep-alive connection; reconnects when the server closed it."""

    def __init__(self, port, token=None, timeout=60):
        self.port = port
        self.token = token
        self.timeout = timeout
        self.conn = None

    def close(self):
        if self.conn:
            self.conn.close()
            self.conn = None

    def request(self, method, path, body=None, token=None, headers=None, raw=False):
        h = dict(headers or {})
        tok = token if token is not None else self.token
        if tok:
            h["Authorization"] = "Bearer " + tok
        if body is not None and not raw:
            body = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body, headers=h)
                r = self.conn.getresponse()
                data = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    self.close()
                return Response(r.status, r.headers, data)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.CannotSendRequest):
                self.close()
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def put(self, path, body=None, **kw):
        return self.request("PUT", path, body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)


def kiln_out(*args, data=None, stdin=None, env=None):
    cmd = [KILN] + [str(a) for a in args]
    return subprocess.run(cmd, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60,
                          env=env)


class Server:
    def __init__(self, data=None, args=()):
        self.own_data = data is None
        self.data = data or tempfile.mkdtemp(prefix="kiln-server-")
        self.args = list(args)
        self.proc = None
        self.port = None
        self.admin = None
        self.stderr_path = os.path.join(tempfile.gettempdir(), "kiln-server-%d.log" % id(self))

    def start(self):
        if self.admin is None:
            p = kiln_out("token", "create", "--kind", "admin", "--data", self.data)
            assert p.returncode == 0, p.stderr
            self.admin = p.stdout.decode().strip()
        self.errf = open(self.stderr_path, "ab")
        # A restart keeps the port so that clients carry on.
        listen = "127.0.0.1:%d" % (self.port or 0)
        self.proc = subprocess.Popen([KILN, "server", "--data", self.data, "--listen", listen] + self.args,
                                     stdout=subprocess.PIPE, stderr=self.errf)
        line = self.proc.stdout.readline().decode()
        assert "listening on" in line, "server did not start: %r\n%s" % (line, self.log())
        self.port = int(line.strip().rsplit(":", 1)[1])
        self.url = "http://127.0.0.1:%d" % self.port
        return self

    def log(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode(errors="replace")[-4000:]
        except OSError:
            return ""

    def client(self, token=None, **kw):
        return Client(self.port, token if token is not None else self.admin, **kw)

    def token(self, kind, name=""):
        r = self.client().post("/api/v1/tokens", {"kind": kind, "name": name})
        assert r.status == 201, r
        return r.json()["token"]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def cleanup(self):
        self.stop()
        if self.own_data:
            shutil.rmtree(self.data, ignore_errors=True)
        try:
            os.unlink(self.stderr_path)
        except OSError:
            pass


@pytest.fixture
def server():
    s = Server().start()
    yield s
    s.cleanup()


class Worker:
    def __init__(self, srv, name="w", labels=None, slots=1, reg_token=None):
        self.srv = srv
        reg = reg_token or srv.token("worker", name)
        body = {"name": name, "labels": labels or {}, "slots": slots}
        r = Client(srv.port, reg).post("/api/v1/workers/register", body)
        assert r.status == 201, r
        self.id = r.json()["worker"]
        self.token = r.json()["token"]
        self.c = Client(srv.port, self.token)

    def claim(self, wait=0, slots=None):
        body = {"wait": wait}
        if slots:
            body["slots"] = slots
        r = self.c.post("/api/v1/workers/claim", body)
        assert r.status in (200, 204), r
        return r.json() if r.status == 200 else None

    def heartbeat(self, a):
        return self.c.post("/api/v1/leases/%d/heartbeat" % a["lease"], {"fence": a["fence"]})

    def log(self, a, offset, data):
        return self.c.post("/api/v1/leases/%d/log?fence=%d&offset=%d" % (a["lease"], a["fence"], offset),
                           data, raw=True, headers={"Content-Type": "application/octet-stream"})

    def finish(self, a, state="succeeded", exit_code=0, log_size=None):
        body = {"fence": a["fence"], "state": state, "exit_code": exit_code}
        if log_size is not None:
            body["log_size"] = log_size
        return self.c.post("/api/v1/leases/%d/finish" % a["lease"], body)


def submit(srv, spec=None, token=None):
    r = srv.client(token).post("/api/v1/jobs", spec or SPEC)
    assert r.status == 201, r
    return r.json()


def wait_for(pred, timeout=10, interval=0.05):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    return pred()


def in_thread(fn, *args):
    out = {}

    def run():
        try:
            out["value"] = fn(*args)
        except BaseException as e:  # noqa: B902 - reported to the test
            out["error"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out
