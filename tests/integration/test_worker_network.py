"""The network between worker and server is cut for 20 s mid-task: the
worker runs in a network namespace of its own, joined to the host by a veth
pair whose host end is taken down. The task finishes and its log arrives
complete and in order."""
import subprocess
import time
import uuid

import pytest

from conftest import KILN, have_root
from kilnapi import Server, submit, wait_for
from workerlib import WorkerProc, artifact_files, artifacts, task_log, wait_task_state

pytestmark = pytest.mark.skipif(not have_root(), reason="needs root (network namespaces, sandboxes)")


def ip(*args):
    subprocess.run(["ip"] + list(args), check=True)


@pytest.fixture
def netns():
    tag = uuid.uuid4().hex[:6]
    ns, host_if, ns_if = "kilnw-" + tag, "wnh" + tag, "wnn" + tag  # not kv*: the sandbox NAT table owns those
    octet = 100 + int(tag[:2], 16) % 100
    host_addr, ns_addr = "10.213.%d.1" % octet, "10.213.%d.2" % octet
    ip("netns", "add", ns)
    try:
        ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        ip("link", "set", ns_if, "netns", ns)
        ip("addr", "add", host_addr + "/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("-n", ns, "addr", "add", ns_addr + "/30", "dev", ns_if)
        ip("-n", ns, "link", "set", ns_if, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        yield ns, host_if, host_addr
    finally:
        subprocess.run(["ip", "link", "del", host_if], stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "netns", "del", ns])


def test_network_cut_for_20s(netns):
    ns, host_if, host_addr = netns
    srv = Server(args=["--lease-ttl", "45s"])
    w = None
    try:
        port = start_on_any_address(srv)
        w = WorkerProc(srv, "netcut", args=["--pool", "host=1"], url="http://%s:%d" % (host_addr, port),
                       nsenter=ns).start()
        script = ("mkdir -p out; i=0; while [ $i -lt 300 ]; do echo \"line $i\"; i=$((i+1)); sleep 0.1; done "
                  "| tee out/copy.txt")
        j = submit(srv, {"name": "netcut", "steps": [{"run": script}], "artifacts": ["out/copy.txt"]})
        tid = j["tasks"][0]["id"]
        assert wait_for(lambda: b"line 20\n" in task_log(srv, tid), timeout=30), w.log()
        ip("link", "set", host_if, "down")
        cut = time.time()
        try:
            time.sleep(3)
            frozen = len(task_log(srv, tid))
            time.sleep(max(0, 20 - (time.time() - cut)))
            # Nothing got through while the link was down.
            assert len(task_log(srv, tid)) == frozen
        finally:
            ip("link", "set", host_if, "up")
        t = wait_task_state(srv, tid, ("succeeded", "failed", "lost"), timeout=60)
        assert t["state"] == "succeeded", (t, w.log())
        assert len(t["attempts"]) == 1
        log = task_log(srv, tid)
        assert log == "".join("line %d\n" % i for i in range(300)).encode()
        copy = artifact_files(srv, artifacts(srv, j["id"])[0]["id"])["out/copy.txt"]
        assert log == copy
    finally:
        if w:
            w.stop()
        srv.cleanup()


def start_on_any_address(srv):
    """Starts srv listening on 0.0.0.0 (Server.start listens on loopback only):
    the worker comes through the veth pair, the test through loopback."""
    p = subprocess.run([KILN, "token", "create", "--kind", "admin", "--data", srv.data],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.returncode == 0, p.stderr
    srv.admin = p.stdout.decode().strip()
    srv.errf = open(srv.stderr_path, "ab")
    srv.proc = subprocess.Popen([KILN, "server", "--data", srv.data, "--listen", "0.0.0.0:0"] + srv.args,
                                stdout=subprocess.PIPE, stderr=srv.errf)
    line = srv.proc.stdout.readline().decode()
    assert "listening on" in line, srv.log()
    srv.port = int(line.strip().rsplit(":", 1)[1])
    srv.url = "http://127.0.0.1:%d" % srv.port
    return srv.port
