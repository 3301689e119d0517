"""`kiln sandbox run`: behaviour, isolation of what the command writes, and
limits. The escape battery lives in test_escape.py, leaks in
test_sandbox_leaks.py."""
import os
import re
import subprocess
import time

import pytest

from conftest import KILN, kiln, needs_root
from sandboxlib import inventory, make_busybox_rootfs, new_since, settled

pytestmark = needs_root


def sb(*args, **kw):
    return kiln("sandbox", "run", *args, **kw)


def test_exit_status_and_streams(sandbox_dir):
    p = sb("--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert p.returncode == 3
    assert p.stdout == b"out\n"
    assert p.stderr == b"err\n"


def test_killed_by_signal_is_128_plus_n(sandbox_dir):
    p = sb("--", "sh", "-c", "kill -9 $$")
    assert p.returncode == 137


def test_stdin_passes_through(sandbox_dir):
    p = sb("--", "sh", "-c", "tr a-z A-Z", input=b"hello\n")
    assert p.returncode == 0 and p.stdout == b"HELLO\n"


def test_missing_command_is_127(sandbox_dir):
    p = sb("--", "/no/such/program")
    assert p.returncode == 127
    assert b"/no/such/program" in p.stderr


def test_env_workdir_and_hostname(sandbox_dir):
    p = sb("--env", "FOO=bar baz", "--workdir", "/usr", "--hostname", "buildbox", "--",
           "sh", "-c", 'echo "$FOO|$(pwd)|$(hostname)|$HOME"', check=True)
    assert p.stdout == b"bar baz|/usr|buildbox|/root\n"


def test_writes_do_not_survive(sandbox_dir):
    marker = "/etc/kiln-test-%d" % os.getpid()
    p = sb("--", "sh", "-c", "echo x > %s && echo y > /tmp/t && cat %s" % (marker, marker),
           check=True)
    assert p.stdout == b"x\n"
    assert not os.path.exists(marker)
    p = sb("--", "cat", marker)
    assert p.returncode != 0


WRITER = """
import os
os.makedirs("/var/kiln-mem/small")
with open("/var/kiln-mem/big", "wb") as f:
    for _ in range(64):
        f.write(b"x" * (1 << 20))
for i in range(5000):
    with open("/var/kiln-mem/small/%d" % i, "w") as f:
        f.write(str(i))
with open("/etc/kiln-mem", "w") as f:
    f.write("etc")
print(os.stat("/var/kiln-mem/big").st_size, len(os.listdir("/var/kiln-mem/small")), flush=True)
"""


def state_tree(sandbox_dir):
    """Every path below the sandbox directory, relative to it."""
    found = []
    for top, dirs, files in os.walk(sandbox_dir):
        for n in dirs + files:
            found.append(os.path.relpath(os.path.join(top, n), sandbox_dir))
    return sorted(found)


def test_writable_layer_is_in_memory_without_disk(sandbox_dir):
    proc = subprocess.Popen([KILN, "sandbox", "run", "--", "sh", "-c",
                             "python3 -c '%s' && sleep 100" % WRITER.replace("'", '"')],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline()
        assert line.split() == [str(64 << 20).encode(), b"5000"], (line, proc.stderr.read1())
        # While it runs, the state directory is its lock and nothing else: no
        # upper/ or work/, none of the files written.
        tree = state_tree(sandbox_dir)
        state = [e for e in tree if not e.startswith(".")]
        assert len(state) == 1 and "/" not in state[0], tree
        assert tree == sorted([".mnt", state[0]]), tree
        proc.terminate()  # forwarded to the command: kiln then destroys the sandbox
        proc.wait(timeout=20)
    finally:
        proc.kill()
        proc.wait()
    assert settled(lambda: state_tree(sandbox_dir), [".mnt"]) == [".mnt"]
    assert not os.path.exists("/var/kiln-mem") and not os.path.exists("/etc/kiln-mem")
    p = sb("--", "sh", "-c", "ls /var/kiln-mem /etc/kiln-mem 2>&1; echo rc=$?")
    assert b"rc=0" not in p.stdout, p.stdout


def state_dirs(root):
    return sorted(e for e in os.listdir(root) if not e.startswith(".")) if os.path.isdir(root) else []


@pytest.mark.parametrize("disk", [False, True])
def test_default_state_roots_and_gc_after_sigkill(disk):
    """Without KILN_SANDBOX_DIR a sandbox's state lives in /run/kiln/sandboxes
    when it holds nothing but its lock (the writable layer in memory), and in
    /var/lib/kiln/sandboxes with a disk image; either way `kiln sandbox gc`
    removes what a SIGKILLed kiln left."""
    env = dict(os.environ)
    env.pop("KILN_SANDBOX_DIR", None)
    root, other = ("/var/lib/kiln/sandboxes", "/run/kiln/sandboxes") if disk else \
        ("/run/kiln/sandboxes", "/var/lib/kiln/sandboxes")
    before, before_other = set(state_dirs(root)), set(state_dirs(other))
    args = ["--disk", "64M"] if disk else []
    proc = subprocess.Popen([KILN, "sandbox", "run"] + args + ["--", "sh", "-c", "echo up; sleep 100"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stdout.readline() == b"up\n", proc.stderr.read1()
        mine = set(state_dirs(root)) - before
        assert len(mine) == 1, (state_dirs(root), before)
        assert set(state_dirs(other)) == before_other
    finally:
        proc.kill()
        proc.wait()
    assert mine <= set(state_dirs(root))  # kiln died: its state stays
    p = kiln("sandbox", "gc", env=env)
    assert p.returncode == 0, p.stderr
    assert not (mine & set(state_dirs(root))), state_dirs(root)
    sid = next(iter(mine)).split(".")[0]
    assert ("Removed leftover sandbox %s" % sid).encode() in p.stderr, p.stderr


def test_in_memory_layer_is_sized_by_the_memory_limit(sandbox_dir):
    p = sb("--memory", "96M", "--", "sh", "-c",
           "df -k / | tail -1; dd if=/dev/zero of=/var/ok bs=1M count=32 2>/dev/null && "
           "stat -c %s /var/ok", check=True)
    df, size = p.stdout.decode().splitlines()
    assert int(df.split()[1]) == 96 << 10, df
    assert int(size) == 32 << 20


@pytest.mark.parametrize("writer", [
    ["dd", "if=/dev/zero", "of=/var/big", "bs=1M", "count=200"],
    # A shell and head are smaller than the sandbox's init: the OOM killer
    # takes init first, and with it the whole sandbox.
    ["sh", "-c", "head -c 200M /dev/zero > /var/big"],
], ids=["dd", "shell"])
def test_in_memory_layer_counts_against_the_memory_limit(sandbox_dir, writer):
    # The limit is reached before the tmpfs is full (the processes count
    # too), so this is an OOM kill, not ENOSPC; it ends the command, never
    # the host.
    before = inventory(sandbox_dir, own=True)
    p = sb("--memory", "64M", "--", *writer)
    assert p.returncode == 137, p
    assert b"out of memory" in p.stderr and b"--disk" in p.stderr, p.stderr
    assert sb("--", "true").returncode == 0
    left = new_since(before, sandbox_dir)
    for k in ("processes", "mounts", "dirs", "cgroups"):
        assert left[k] == [], (k, left[k])


def test_bind_mounts(sandbox_dir, tmpdir_path):
    rw = os.path.join(tmpdir_path, "rw")
    ro = os.path.join(tmpdir_path, "ro")
    os.makedirs(rw)
    os.makedirs(ro)
    os.chmod(rw, 0o777)
    with open(os.path.join(ro, "f"), "w") as f:
        f.write("data")
    p = sb("--bind", "%s:/out" % rw, "--bind", "%s:/in:ro" % ro, "--",
           "sh", "-c", "cat /in/f > /out/copy; echo z > /in/g; echo $?", check=True)
    assert open(os.path.join(rw, "copy")).read() == "data"
    assert p.stdout.strip() != b"0"
    assert not os.path.exists(os.path.join(ro, "g"))


def test_image_files_keep_their_owners(sandbox_dir):
    # Through the idmapped image, root's files are root's inside, not nobody's.
    p = sb("--", "stat", "-c", "%u:%g", "/usr/bin", "/etc/passwd", check=True)
    assert p.stdout.split() == [b"0:0", b"0:0"]
    p = sb("--", "sh", "-c", "echo ok > /etc/new && stat -c %u /etc/new && chown 1000 /etc/new "
           "&& stat -c %u /etc/new", check=True)
    assert p.stdout.split() == [b"0", b"1000"]


def test_host_secrets_are_masked(sandbox_dir):
    p = sb("--", "sh", "-c", "for d in /root /home /run %s; do ls -A $d | wc -l; done; "
           "wc -c < /etc/shadow" % sandbox_dir, check=True)
    assert p.stdout.split() == [b"0", b"0", b"0", b"0", b"0"], p.stdout


def test_mask_option(sandbox_dir, tmpdir_path):
    secret = os.path.join(tmpdir_path, "secret")
    os.makedirs(secret)
    with open(os.path.join(secret, "key"), "w") as f:
        f.write("x")
    p = sb("--mask", secret, "--", "ls", "-A", secret, check=True)
    assert p.stdout == b""


def test_pid_namespace_and_init(sandbox_dir):
    p = sb("--", "sh", "-c", "echo $$; cat /proc/1/comm", check=True)
    assert p.stdout.split() == [b"2", b"kiln-init"]


def test_busybox_image_dir(sandbox_dir, tmpdir_path):
    root = make_busybox_rootfs(os.path.join(tmpdir_path, "rootfs"))
    p = sb("--image", root, "--", "sh", "-c", "ls /bin | grep -c . ; cat /etc/passwd | head -1; "
           "test -e /usr/bin/gcc && echo host-visible || echo isolated", check=True)
    lines = p.stdout.decode().split("\n")
    assert int(lines[0]) > 50
    assert lines[1].startswith("root:x:0:0")
    assert lines[2] == "isolated"
    # The image itself is untouched by what the command writes.
    sb("--image", root, "--", "sh", "-c", "rm -rf /bin/ls; echo x > /etc/passwd", check=True)
    assert os.path.exists(os.path.join(root, "bin", "ls"))
    assert open(os.path.join(root, "etc", "passwd")).read().startswith("root:x:0:0")


def test_timeout_stops_everything(sandbox_dir):
    before = inventory(sandbox_dir, own=True)
    start = time.monotonic()
    p = sb("--timeout", "1s", "--kill-after", "1s", "--",
           "sh", "-c", "trap '' TERM; sleep 100 & sleep 100")
    assert p.returncode == 124
    assert time.monotonic() - start < 10
    assert b"Timed out" in p.stderr
    assert new_since(before, sandbox_dir)["processes"] == []


def test_sigterm_is_forwarded(sandbox_dir):
    proc = subprocess.Popen([KILN, "sandbox", "run", "--", "sh", "-c",
                             "trap 'echo got-term; exit 7' TERM; echo ready; "
                             "while :; do sleep 0.1; done"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"ready\n"
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait()
    assert out == b"got-term\n"
    assert proc.returncode == 7


# ---- limits -------------------------------------------------------------------------------

FORK_BOMB = """
import errno, os, signal, time
kids, eagain = [], 0
for i in range(200):
    try:
        pid = os.fork()
    except OSError as e:
        if e.errno != errno.EAGAIN:
            raise
        eagain += 1
        continue
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    kids.append(pid)
for k in kids:
    os.kill(k, signal.SIGKILL)
print(len(kids), eagain)
"""


def test_fork_bomb_stops_at_pids(sandbox_dir):
    start = time.monotonic()
    p = sb("--pids", "32", "--", "python3", "-c", FORK_BOMB, check=True)
    kids, eagain = map(int, p.stdout.split())
    # init and python3 count too: at most 30 children, every other fork EAGAIN.
    assert kids <= 30 and kids + eagain == 200, p.stdout
    # The host stayed responsive: this took seconds, not a hung machine.
    assert time.monotonic() - start < 30


def test_memory_bomb_is_oom_killed_inside(sandbox_dir):
    # python3 holds memory for sure (a shell's string would be copied around).
    p = sb("--memory", "64M", "--", "python3", "-c",
           "b=[]\nwhile True: b.append(bytearray(1<<20))")
    assert p.returncode == 137, p
    assert b"out of memory" in p.stderr
    # Only the sandbox was hit: we are still here, and a sibling sandbox works.
    assert sb("--", "true").returncode == 0


def test_memory_held_by_files_ends_the_sandbox_not_the_host(sandbox_dir):
    # Killing a writer frees none of what it wrote to /dev/shm, so the OOM
    # killer goes on from process to process; here the sandbox's init, bigger
    # than a shell and head, is its first victim, and takes the whole sandbox.
    before = inventory(sandbox_dir, own=True)
    p = sb("--memory", "64M", "--", "sh", "-c", "head -c 200M /dev/zero > /dev/shm/big")
    assert p.returncode == 137, p
    assert b"The command was killed: out of memory" in p.stderr, p.stderr
    assert sb("--", "true").returncode == 0
    left = new_since(before, sandbox_dir)
    for k in ("processes", "mounts", "dirs", "cgroups"):
        assert left[k] == [], (k, left[k])


def test_disk_quota_hits_enospc(sandbox_dir):
    p = sb("--disk", "32M", "--", "sh", "-c",
           "dd if=/dev/zero of=/var/big bs=1M count=100 2>&1; echo rc=$?")
    out = p.stdout.decode()
    assert "No space left on device" in out, out
    assert "rc=1" in out
    m = re.search(r"(\d+) bytes", out)
    assert m and int(m.group(1)) <= 32 << 20


def test_disk_quota_leaves_room_for_work(sandbox_dir):
    p = sb("--disk", "64M", "--", "sh", "-c",
           "dd if=/dev/zero of=/var/ok bs=1M count=20 2>/dev/null && ls -l /var/ok | awk '{print $5}'",
           check=True)
    assert int(p.stdout) == 20 << 20


def test_cpu_quota_holds(sandbox_dir):
    # Two busy loops for 3 s of wall time with --cpus 0.5 may use 1.5 s of CPU.
    script = ("for i in 1 2; do (while :; do :; done) & done; sleep 3; "
              "cat /proc/[0-9]*/stat 2>/dev/null | awk '{u+=$14+$15} END {print u}'; kill -9 -1")
    p = sb("--cpus", "0.5", "--", "sh", "-c", script)
    ticks = int(p.stdout.split()[0])
    hz = os.sysconf("SC_CLK_TCK")
    used = ticks / hz
    assert 0.5 * 3 * 0.8 <= used <= 0.5 * 3 * 1.2, "used %.2f s of CPU" % used
