"""Helpers for sandbox tests: minimal root file systems and leak inventories."""
import os
import shutil
import subprocess

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


def sandbox_processes():
    """Processes running with a sandbox's host uid."""
    procs = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/status" % pid) as f:
                for line in f:
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) >= UID_BASE:
                            procs.append(int(pid))
                        break
        except OSError:
            pass
    return procs


def kiln_init_processes():
    procs = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/comm" % pid) as f:
                    if f.read().strip() == "kiln-init":
                        procs.append(int(pid))
            except OSError:
                pass
    return procs


def veth_leftovers():
    out = subprocess.run(["ip", "-o", "link", "show"], stdout=subprocess.PIPE, text=True).stdout
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


def inventory(sandbox_dir):
    return {
        "cgroups": cgroup_leftovers(),
        "processes": sandbox_processes() + kiln_init_processes(),
        "veths": veth_leftovers(),
        "mounts": mount_leftovers(sandbox_dir),
        "loops": loop_leftovers(sandbox_dir),
        "dirs": dir_leftovers(sandbox_dir),
    }
