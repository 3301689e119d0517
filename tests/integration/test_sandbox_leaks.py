"""200 sandboxes created and destroyed — some killed mid-run, some with their
kiln process SIGKILLed — leave no mount, cgroup, netns, veth, loop device,
process or directory behind."""
import os
import signal
import subprocess
import time

from conftest import KILN, kiln, needs_root
from sandboxlib import inventory, kiln_init_processes, sandbox_processes

pytestmark = needs_root

EMPTY = {"cgroups": [], "processes": [], "veths": [], "mounts": [], "loops": [], "dirs": []}


def leftovers(sandbox_dir, baseline):
    """What exists now and did not before the test (other kiln users of this
    machine may hold sandboxes of their own)."""
    now = inventory(sandbox_dir)
    return {k: [x for x in v if x not in baseline[k]] for k, v in now.items()}


def nat_available():
    p = kiln("sandbox", "run", "--network", "nat", "--", "true")
    return p.returncode == 0


def start(*args):
    return subprocess.Popen([KILN, "sandbox", "run"] + list(args), stdout=subprocess.PIPE,
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


def test_no_leaks_after_200_sandboxes(sandbox_dir):
    base = inventory(sandbox_dir)
    nat = nat_available()
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
        procs = [start(*args) for _, args, _ in batch]
        for (name, args, expect), p in zip(batch, procs):
            out, err = p.communicate(timeout=120)
            assert p.returncode == expect, (name, p.returncode, err)
    assert leftovers(sandbox_dir, base) == EMPTY

    # 20 whose kiln process is SIGKILLed while the command runs. They run side by
    # side: each start collects what dead owners left, so one at a time would
    # leave just the last one behind.
    procs = [start("--", "sh", "-c", "echo ready; sleep 300 & sleep 300") for _ in range(20)]
    for p in procs:
        assert p.stdout.readline() == b"ready\n"
    for p in procs:
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stdout.close()
        p.stderr.close()
    # Everything inside died with its kiln process…
    assert wait_gone(lambda: sandbox_processes() or kiln_init_processes()), \
        (sandbox_processes(), kiln_init_processes())
    inv = leftovers(sandbox_dir, base)
    assert len(inv["dirs"]) == 20  # …and the host-side state waits for the next start
    assert inv["mounts"] == [] and inv["loops"] == []

    # The next start removes the leftovers.
    p = kiln("sandbox", "gc", check=True)
    assert b"removed 20 leftover sandboxes" in p.stdout
    assert leftovers(sandbox_dir, base) == EMPTY


def test_next_run_collects_leftovers(sandbox_dir):
    base = inventory(sandbox_dir)
    p = start("--", "sh", "-c", "echo ready; sleep 300")
    assert p.stdout.readline() == b"ready\n"
    p.send_signal(signal.SIGKILL)
    p.wait()
    p.stdout.close()
    p.stderr.close()
    assert wait_gone(lambda: sandbox_processes() or kiln_init_processes())
    assert len(inventory(sandbox_dir)["dirs"]) == 1
    r = kiln("sandbox", "run", "--", "true", check=True)
    assert b"Removed leftover sandbox" in r.stderr
    assert leftovers(sandbox_dir, base) == EMPTY
