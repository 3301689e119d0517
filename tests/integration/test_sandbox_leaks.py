"""200 sandboxes created and destroyed — some killed mid-run, some with their
kiln process SIGKILLed — leave no mount, cgroup, netns, veth, loop device,
process or directory behind.

Other kiln users of the machine (a worker's pool, another test run) may come
and go meanwhile: the kiln processes of these tests run in a network
namespace of their own (so the veths counted are theirs), and the processes
counted are those of sandboxes under the test's sandbox directory."""
import signal
import subprocess
import time
import uuid

import pytest

from conftest import KILN, needs_root, run
from sandboxlib import inventory, kiln_init_processes, new_since, sandbox_processes

pytestmark = needs_root

EMPTY = {"cgroups": [], "processes": [], "veths": [], "mounts": [], "loops": [], "dirs": []}


@pytest.fixture
def netns():
    name = "kiln-leaks-%s" % uuid.uuid4().hex[:8]
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
    yield name
    subprocess.run(["ip", "netns", "del", name])


def in_netns(netns, *args):
    return ["nsenter", "--net=/run/netns/" + netns, KILN] + [str(a) for a in args]


def leftovers(sandbox_dir, netns, baseline):
    """What exists now and did not before the test."""
    now = inventory(sandbox_dir, netns, own=True)
    return {k: [x for x in v if x not in baseline[k]] for k, v in now.items()}


def nat_available(netns):
    return run(in_netns(netns, "sandbox", "run", "--network", "nat", "--", "true")).returncode == 0


def start(netns, *args):
    return subprocess.Popen(in_netns(netns, "sandbox", "run", *args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def wait_gone(pred, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not pred():
            return True
        time.sleep(0.05)
    return False


def run_batch(procs, expect):
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == expect, (p.args, p.returncode, err)


def test_no_leaks_after_200_sandboxes(sandbox_dir, netns):
    base = inventory(sandbox_dir, netns, own=True)
    nat = nat_available(netns)
    kinds = []
    kinds += [("plain", ["--", "true"], 0)] * 100
    kinds += [("disk", ["--disk", "16M", "--", "sh", "-c", "echo x > /f"], 0)] * 20
    kinds += [("nat" if nat else "plain2", (["--network", "nat"] if nat else []) + ["--", "true"], 0)] * 20
    kinds += [("limits", ["--memory", "64M", "--pids", "64", "--cpus", "1", "--", "true"], 0)] * 20
    # Killed mid-run by its timeout: the command ignores SIGTERM and has children.
    kinds += [("timeout", ["--timeout", "0.2s", "--kill-after", "0.2s", "--",
                           "sh", "-c", "trap '' TERM; sleep 30 & sleep 30"], 124)] * 20

    # Four at a time, as a worker would.
    for i in range(0, len(kinds), 4):
        batch = kinds[i:i + 4]
        procs = [start(netns, *args) for _, args, _ in batch]
        for (name, args, expect), p in zip(batch, procs):
            out, err = p.communicate(timeout=120)
            assert p.returncode == expect, (name, p.returncode, err)
    assert new_since(base, sandbox_dir, netns) == EMPTY

    # 20 whose kiln process is SIGKILLed while the command runs. They run side by
    # side: each start collects what dead owners left, so one at a time would
    # leave just the last one behind.
    procs = [start(netns, "--", "sh", "-c", "echo ready; sleep 300 & sleep 300") for _ in range(20)]
    for p in procs:
        assert p.stdout.readline() == b"ready\n"
    for p in procs:
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stdout.close()
        p.stderr.close()
    # Everything inside died with its kiln process…
    assert wait_gone(lambda: sandbox_processes(sandbox_dir) or kiln_init_processes(sandbox_dir)), \
        (sandbox_processes(sandbox_dir), kiln_init_processes(sandbox_dir))
    inv = leftovers(sandbox_dir, netns, base)
    assert len(inv["dirs"]) == 20  # …and the host-side state waits for the next start
    assert inv["mounts"] == [] and inv["loops"] == []

    # The next start removes the leftovers.
    p = run(in_netns(netns, "sandbox", "gc"), check=True)
    assert b"removed 20 leftover sandboxes" in p.stdout
    assert new_since(base, sandbox_dir, netns) == EMPTY


def test_next_run_collects_leftovers(sandbox_dir, netns):
    base = inventory(sandbox_dir, netns, own=True)
    p = start(netns, "--", "sh", "-c", "echo ready; sleep 300")
    assert p.stdout.readline() == b"ready\n"
    p.send_signal(signal.SIGKILL)
    p.wait()
    p.stdout.close()
    p.stderr.close()
    assert wait_gone(lambda: sandbox_processes(sandbox_dir) or kiln_init_processes(sandbox_dir))
    assert len(inventory(sandbox_dir)["dirs"]) == 1
    r = run(in_netns(netns, "sandbox", "run", "--", "true"), check=True)
    assert b"Removed leftover sandbox" in r.stderr
    assert new_since(base, sandbox_dir, netns) == EMPTY
