"""Helpers for sandbox tests: minimal root file systems and leak inventories."""
import os
import shutil
import subprocess
import time

UID_BASE = 0x40000000


def make_busybox_rootfs(path):
    """A minimal root file system from Debian's busybox-static."""
    bb = shutil.which("busybox") or "/bin/busybox"
    for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "root"):
        os.makedirs(os.path.join(path, d), exist_ok=True)
    os.chmod(os.path.join(path, "tmp"), 0o1777)
    shutil.copy2(bb, os.path.join(path, "bin", "busybox"))
    applets = subprocess.run([bb, "--list"], stdout=subprocess.PIPE, text=True).stdout.split()
    for a in applets:
        link = os.path.join(path, "bin", a)
        if not os.path.exists(link):
            os.symlink("busybox", link)
    with open(os.path.join(path, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n")
    with open(os.path.join(path, "etc", "group"), "w") as f:
        f.write("root:x:0:\nnobody:x:65534:\n")
    return path


def kiln_cgroup_parents():
    """The directories below which kiln creates sandbox cgroups when started
    from this process: '<own cgroup>/kiln' in each hierarchy."""
    parents = []
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            path = path.rstrip("/")
            if ctrls == "":
                for mnt in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
                    parents.append(mnt + path + "/kiln")
            else:
                for c in ctrls.split(","):
                    parents.append("/sys/fs/cgroup/%s%s/kiln" % (c, path))
    return [p for p in parents if os.path.isdir(p)]


def cgroup_leftovers():
    """Sandbox cgroups that exist below any kiln parent cgroup."""
    found = []
    for parent in kiln_cgroup_parents():
        for e in os.listdir(parent):
            if os.path.isdir(os.path.join(parent, e)):
                found.append(os.path.join(parent, e))
    return found


def mentions(pid, sandbox_dir):
    """Whether a process's mounts name sandbox_dir: a sandbox's root overlay
    names its layers there, so this tells one test's sandboxes from those of
    other kiln users of the machine."""
    try:
        with open("/proc/%s/mountinfo" % pid) as f:
            return sandbox_dir in f.read()
    except OSError:
        return False


def sandbox_processes(sandbox_dir=None):
    """Processes running with a sandbox's host uid (of sandboxes under
    sandbox_dir, when given)."""
    procs = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/status" % pid) as f:
                for line in f:
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) >= UID_BASE and (not sandbox_dir or mentions(pid, sandbox_dir)):
                            procs.append(int(pid))
                        break
        except OSError:
            pass
    return procs


def kiln_init_processes(sandbox_dir=None):
    procs = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/comm" % pid) as f:
                    if f.read().strip() == "kiln-init" and (not sandbox_dir or mentions(pid, sandbox_dir)):
                        procs.append(int(pid))
            except OSError:
                pass
    return procs


def veth_leftovers(netns=None):
    pre = ["ip", "netns", "exec", netns] if netns else []
    out = subprocess.run(pre + ["ip", "-o", "link", "show"], stdout=subprocess.PIPE, text=True).stdout
    return [l.split(":")[1].strip().split("@")[0] for l in out.splitlines()
            if l.split(":")[1].strip().startswith("kv")]


def mount_leftovers(sandbox_dir):
    with open("/proc/self/mountinfo") as f:
        return [l for l in f if sandbox_dir in l]


def loop_leftovers(sandbox_dir):
    out = subprocess.run(["losetup", "-a"], stdout=subprocess.PIPE, text=True).stdout
    return [l for l in out.splitlines() if sandbox_dir in l]


def dir_leftovers(sandbox_dir):
    return [e for e in os.listdir(sandbox_dir) if not e.startswith(".")] if os.path.isdir(sandbox_dir) else []


def inventory(sandbox_dir, netns=None, own=False):
    """What kiln has on the machine. own: only processes of sandboxes under
    sandbox_dir; netns: the veths of that network namespace."""
    mine = sandbox_dir if own else None
    return {
        "cgroups": cgroup_leftovers(),
        "processes": sandbox_processes(mine) + kiln_init_processes(mine),
        "veths": veth_leftovers(netns),
        "mounts": mount_leftovers(sandbox_dir),
        "loops": loop_leftovers(sandbox_dir),
        "dirs": dir_leftovers(sandbox_dir),
    }


def settled(fn, want, timeout=5.0):
    """fn()'s value once it equals want, or its last one after timeout. kiln
    sandbox run leaves what has to wait for the kernel to tear a sandbox's
    namespaces down (its cgroup, then its state directory) to a helper that
    ends moments after kiln itself (docs/sandbox.md, "Tearing down")."""
    end = time.monotonic() + timeout
    while True:
        v = fn()
        if v == want or time.monotonic() > end:
            return v
        time.sleep(0.02)


def new_since(before, sandbox_dir, netns=None, timeout=5.0):
    """What exists, once kiln's teardown has had its moment, that did not in
    `before` (an own=True inventory)."""
    def diff():
        now = inventory(sandbox_dir, netns, own=True)
        return {k: [x for x in v if x not in before[k]] for k, v in now.items()}
    return settled(diff, {k: [] for k in before}, timeout)
