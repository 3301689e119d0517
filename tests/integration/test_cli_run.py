"""kiln run and the user's verbs, driven as a user would: no configuration,
a fresh state directory, the embedded default (a private `kiln up` that the
first `kiln run` starts), pseudo-terminals where it matters."""
import glob
import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time
import uuid

import pytest

from conftest import KILN, ROOT, needs_root
from test_jobfile import expectation, matches
from workerlib import processes_with_env, sandbox_leftovers

pytestmark = needs_root


@pytest.fixture(scope="module")
def home():
    """A user with nothing configured: empty state and config directories,
    no KILN_SERVER or KILN_TOKEN. Whatever private server the tests start is
    stopped at the end, and must leave no sandbox behind."""
    d = tempfile.mkdtemp(prefix="kiln-cli-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    env.update(XDG_STATE_HOME=os.path.join(d, "state"), XDG_CONFIG_HOME=os.path.join(d, "config"),
               KILN_SANDBOX_DIR=os.path.join(d, "sandboxes"), NO_COLOR="1")
    os.makedirs(env["KILN_SANDBOX_DIR"])
    yield {"dir": d, "env": env, "state": os.path.join(d, "state", "kiln")}
    up = os.path.join(d, "state", "kiln", "up.json")
    stopped = True
    if os.path.exists(up):
        pid = json.load(open(up))["pid"]
        stopped = False
        try:
            os.kill(pid, signal.SIGTERM)
            for _ in range(300):
                os.kill(pid, 0)
                time.sleep(0.05)
            os.kill(pid, signal.SIGKILL)  # it did not stop: fail below, leave nothing
        except ProcessLookupError:
            stopped = True
    left = sandbox_leftovers(env["KILN_SANDBOX_DIR"])
    shutil.rmtree(d, ignore_errors=True)
    assert stopped, "kiln up did not stop within 15 s of SIGTERM"
    assert left == [], "sandboxes left behind: %r" % left


def k(home, *args, cwd=None, timeout=120, input=None):
    return subprocess.run([KILN] + [str(a) for a in args], cwd=cwd or home["dir"], env=home["env"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, input=input)


def up_info(home):
    return json.load(open(os.path.join(home["state"], "up.json")))


def metric(home, name):
    import urllib.request
    text = urllib.request.urlopen(up_info(home)["url"] + "/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def blob_uploads(home):
    return metric(home, 'kiln_http_request_duration_seconds_count{route="PUT /api/v1/blobs/*"}')


def workdir(home, files):
    d = tempfile.mkdtemp(dir=home["dir"], prefix="ws-")
    for name, text in files.items():
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    return d


def test_c_project_with_nothing_configured(home):
    # The first run on a fresh machine: no server, no token, no state.
    assert not os.path.exists(home["state"])
    p = k(home, "run", cwd=os.path.join(ROOT, "examples", "c-project"))
    assert p.returncode == 0, p.stderr.decode()
    out = p.stdout.decode()
    assert "all tests passed" in out and "hello, kiln!" in out
    assert "succeeded" in p.stderr.decode()
    # It started a private server that the next commands find.
    assert os.path.exists(os.path.join(home["state"], "up.json"))
    ps = json.loads(k(home, "ps", "--json").stdout)
    assert ps["jobs"][0]["state"] == "succeeded" and ps["jobs"][0]["name"] == "c-project"


def test_broken_code_exits_with_the_build_status(home):
    d = tempfile.mkdtemp(dir=home["dir"], prefix="c-")
    src = os.path.join(ROOT, "examples", "c-project")
    for f in os.listdir(src):
        shutil.copy(os.path.join(src, f), d)
    with open(os.path.join(d, "greet.c"), "a") as f:
        f.write("\nthis is not C;\n")
    p = k(home, "run", cwd=d)
    assert p.returncode == 2, (p.returncode, p.stderr.decode())  # make's status
    assert b"greet.c" in p.stdout + p.stderr
    assert "failed" in p.stderr.decode()


def test_command_exit_status_and_worker_messages_on_stderr(home):
    d = workdir(home, {})
    p = k(home, "run", "--", "sh", "-c", "echo out; echo err >&2; exit 3", cwd=d)
    assert p.returncode == 3
    assert p.stdout.decode().startswith("out\n")
    assert "err" in (p.stdout + p.stderr).decode()
    # The worker's own lines ("[kiln] …") and the summary go to stderr.
    assert "[kiln]" not in p.stdout.decode()
    assert "exit status 3" in p.stderr.decode()


def test_stdout_and_stderr_kept_apart(home):
    d = workdir(home, {})
    p = k(home, "run", "-q", "--", "sh", "-c", "echo out; echo err >&2; exit 3", cwd=d)
    assert p.returncode == 3
    assert p.stdout == b"out\n"
    assert p.stderr.decode().startswith("err\n")
    # Interleaved writes keep their order within each stream; binary bytes
    # on stderr pass intact.
    p = k(home, "run", "-q", "--", "sh", "-c",
          "echo a; echo b >&2; sleep 0.2; echo c; printf '\\001\\377\\n' >&2", cwd=d)
    assert p.returncode == 0
    assert p.stdout == b"a\nc\n"
    assert p.stderr.startswith(b"b\n\x01\xff\n"), p.stderr
    # kiln logs keeps them apart too; --raw shows the stored frames.
    p = k(home, "run", "--detach", "--", "sh", "-c", "echo o1; echo e1 >&2", cwd=d)
    job = int(p.stdout.decode().strip())
    assert k(home, "logs", "-f", job).returncode == 0
    p = k(home, "logs", job)
    assert p.returncode == 0 and p.stdout == b"o1\n" and p.stderr == b"e1\n", (p.stdout, p.stderr)
    p = k(home, "logs", "--raw", job)
    assert p.stdout == b"o1\n\x1b]kiln;err;3\x07e1\n", p.stdout


def test_jobs_get_outbound_network_unless_they_say_none(home):
    # The embedded default gives jobs a NAT interface with a default route
    # (the host's own addresses stay unreachable: test_escape.py); a job or
    # `kiln run --network none` gets loopback only.
    d = workdir(home, {"kiln.yml": "network: none\nsteps:\n  - run: ls /sys/class/net\n"})
    script = "ls /sys/class/net; awk '$2 == \"00000000\" {print \"default via\", $1}' /proc/net/route"
    p = k(home, "run", "-q", "--", "sh", "-c", script, cwd=d)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [b"eth0", b"lo", b"default", b"via", b"eth0"], p.stdout
    p = k(home, "run", "-q", "--network", "none", "--", "sh", "-c", script, cwd=d)
    assert p.returncode == 0 and p.stdout.split() == [b"lo"], p.stdout
    p = k(home, "run", "-q", cwd=d)
    assert p.returncode == 0 and p.stdout.split() == [b"lo"], p.stdout
    p = k(home, "run", "--network", "wifi", "--", "true", cwd=d)
    assert p.returncode == 2 and b"--network" in p.stderr


def test_a_killed_private_server_is_replaced(home):
    d = workdir(home, {})
    assert k(home, "run", "-q", "--", "true", cwd=d).returncode == 0
    first = up_info(home)
    os.kill(first["pid"], signal.SIGKILL)
    assert wait_for_gone(first["pid"])
    # up.json is left behind; nothing holds up.lock any more.
    p = k(home, "run", "-q", "--", "echo", "again", cwd=d)
    assert p.returncode == 0 and p.stdout == b"again\n", p.stderr
    assert up_info(home)["pid"] != first["pid"]


def wait_for_gone(pid, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_config_file_names_server_and_token(home):
    assert k(home, "run", "-q", "--", "true", cwd=workdir(home, {})).returncode == 0
    info = up_info(home)
    token = open(os.path.join(home["state"], "admin.token")).read().strip()
    conf_dir = os.path.join(home["env"]["XDG_CONFIG_HOME"], "kiln")
    os.makedirs(conf_dir, exist_ok=True)
    conf = os.path.join(conf_dir, "kiln.conf")
    try:  # the home is shared with the tests that follow
        with open(conf, "w") as f:
            f.write("# the local kiln up\nserver = %s  \n  token=%s\n" % (info["url"], token))
        assert k(home, "ps", "--json").returncode == 0
        with open(conf, "w") as f:
            f.write("server = %s\ntoken = kiln_usr_wrong\n" % info["url"])
        p = k(home, "ps")
        assert p.returncode == 1 and b"config file" in p.stderr, p.stderr
        with open(conf, "w") as f:
            f.write("\nsrever = %s\n" % info["url"])
        p = k(home, "ps")
        assert p.returncode != 0 and (conf + ":2: unknown key 'srever'").encode() in p.stderr, p.stderr
    finally:
        os.unlink(conf)


def test_unchanged_directory_is_uploaded_once(home):
    d = workdir(home, {"data.txt": "unique %s\n" % uuid.uuid4()})
    k(home, "run", "--", "true", cwd=d)  # a server is up from here on
    before = blob_uploads(home)
    with open(os.path.join(d, "data.txt"), "a") as f:
        f.write("changed\n")
    assert k(home, "run", "--", "cat", "data.txt", cwd=d).returncode == 0
    first = blob_uploads(home)
    assert first == before + 1
    p = k(home, "run", "--", "cat", "data.txt", cwd=d)
    assert p.returncode == 0 and b"changed" in p.stdout
    assert blob_uploads(home) == first


def test_unchanged_tree_is_not_packed_again_and_changes_are_never_missed(home):
    cache = os.path.join(home["state"], "workspaces")
    d = workdir(home, {"data.txt": "first\n"})
    old = time.time() - 60
    os.utime(os.path.join(d, "data.txt"), (old, old))
    k(home, "run", "--", "true", cwd=d)  # a server is up from here on
    for e in os.listdir(cache) if os.path.isdir(cache) else []:
        os.unlink(os.path.join(cache, e))
    # Changed less than 2 s before the run (the ctime is now): packed, not
    # remembered (unless this machine took that long to get to it).
    t0 = time.time()
    with open(os.path.join(d, "data.txt"), "a") as f:
        f.write("")
    os.chmod(os.path.join(d, "data.txt"), 0o644)
    p = k(home, "run", "-q", "--", "cat", "data.txt", cwd=d)
    assert p.stdout == b"first\n"
    if time.time() - t0 < 1.5:
        assert not os.listdir(cache) if os.path.isdir(cache) else True
    time.sleep(2.2)
    assert k(home, "run", "-q", "--", "cat", "data.txt", cwd=d).stdout == b"first\n"
    entries = os.listdir(cache)
    assert len(entries) == 1, entries
    # The remembered digest is what the next run submits without packing:
    # pointing it at another tree's archive shows it is used…
    other = workdir(home, {"data.txt": "other\n"})
    time.sleep(2.2)
    assert k(home, "run", "-q", "--", "cat", "data.txt", cwd=other).stdout == b"other\n"
    by_tree = {}
    for e in os.listdir(cache):
        by_tree[e] = open(os.path.join(cache, e)).read()
    mine = [e for e in by_tree if e in entries][0]
    theirs = [e for e in by_tree if e not in entries][0]
    with open(os.path.join(cache, mine), "w") as f:
        f.write(by_tree[theirs])
    assert k(home, "run", "-q", "--", "cat", "data.txt", cwd=d).stdout == b"other\n"
    with open(os.path.join(cache, mine), "w") as f:
        f.write(by_tree[mine])
    # …and any change reaches the job: same size, mtime put back (the ctime
    # moves all the same), a new file, a removed one.
    path = os.path.join(d, "data.txt")
    with open(path, "w") as f:
        f.write("FIRST\n")
    os.utime(path, (old, old))
    assert k(home, "run", "-q", "--", "cat", "data.txt", cwd=d).stdout == b"FIRST\n"
    with open(os.path.join(d, "new.txt"), "w") as f:
        f.write("new\n")
    assert k(home, "run", "-q", "--", "cat", "new.txt", cwd=d).stdout == b"new\n"
    os.unlink(os.path.join(d, "new.txt"))
    p = k(home, "run", "-q", "--", "ls", cwd=d)
    assert p.stdout == b"data.txt\n", p.stdout
    # A remembered workspace the server no longer has is packed and uploaded.
    time.sleep(2.2)
    assert k(home, "run", "-q", "--", "cat", "data.txt", cwd=d).stdout == b"FIRST\n"
    blobs = os.path.join(home["state"], "server", "blobs", "sha256")
    for b in os.listdir(blobs):
        os.unlink(os.path.join(blobs, b))
    p = k(home, "run", "-q", "--", "cat", "data.txt", cwd=d)
    assert p.returncode == 0 and p.stdout == b"FIRST\n", p.stderr


def test_git_checkout_packs_tracked_and_untracked_not_ignored(home):
    d = workdir(home, {"tracked.txt": "t\n", "untracked.txt": "u\n", "ignored.log": "i\n",
                       ".gitignore": "*.log\n"})
    env = dict(home["env"], GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    subprocess.run(["git", "init", "-q", d], check=True, env=env)
    subprocess.run(["git", "-C", d, "add", "tracked.txt", ".gitignore"], check=True, env=env)
    subprocess.run(["git", "-C", d, "commit", "-qm", "x"], check=True, env=env)
    p = k(home, "run", "--", "sh", "-c", "ls -a | sort | tr '\\n' ' '", cwd=d)
    assert p.returncode == 0
    names = p.stdout.decode().split()
    assert "tracked.txt" in names and "untracked.txt" in names
    assert "ignored.log" not in names and ".git" not in names


def test_kilnignore_outside_git(home):
    d = workdir(home, {"keep.txt": "k\n", "secret.key": "s\n", ".kilnignore": "# comment\n*.key\n"})
    os.makedirs(os.path.join(d, "node_modules", "x"))
    p = k(home, "run", "--", "sh", "-c", "find . | sort", cwd=d)
    assert p.returncode == 0
    assert "./keep.txt" in p.stdout.decode()
    assert "secret.key" not in p.stdout.decode()


def read_until(fd, pattern, timeout=30, buf=b""):
    deadline = time.time() + timeout
    while pattern not in buf:
        left = deadline - time.time()
        if left <= 0:
            raise AssertionError("timed out waiting for %r; got %r" % (pattern, buf[-2000:]))
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                raise AssertionError("EOF waiting for %r; got %r" % (pattern, buf[-2000:]))
            buf += chunk
    return buf


def spawn_pty(home, args, cwd=None, rows=40, cols=120):
    import fcntl
    import struct
    import termios
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(cwd or home["dir"])
        env = dict(home["env"], TERM="xterm", LINES=str(rows), COLUMNS=str(cols))
        os.execve(KILN, [KILN] + args, env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    return pid, fd


def drain_and_wait(pid, fd, timeout=30):
    buf = b""
    deadline = time.time() + timeout
    while time.time() < deadline:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            buf += chunk
            if not chunk:
                break
        wpid, status = os.waitpid(pid, os.WNOHANG)
        if wpid:
            return os.waitstatus_to_exitcode(status), buf
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), buf


def test_ctrl_c_cancels_the_job_and_leaves_nothing(home):
    d = workdir(home, {})
    marker = "KILN_CLI_TEST_%s" % uuid.uuid4().hex
    pid, fd = spawn_pty(home, ["run", "--env", "%s=1" % marker, "--", "sh", "-c",
                               "echo step-started; sleep 300 & sleep 300; wait"], cwd=d)
    buf = read_until(fd, b"step-started")
    assert processes_with_env(marker), "the job's processes should be running"
    os.write(fd, b"\x03")  # Ctrl-C, through the terminal
    rc, rest = drain_and_wait(pid, fd)
    assert rc == 130, (buf + rest).decode(errors="replace")
    assert b"cancel" in rest
    jobs = json.loads(k(home, "ps", "--json").stdout)["jobs"]
    assert jobs[0]["state"] == "cancelled"
    # Nothing of the job runs on: the sandbox was killed whole.
    for _ in range(50):
        if not processes_with_env(marker):
            break
        time.sleep(0.1)
    assert processes_with_env(marker) == []


def test_second_ctrl_c_detaches(home):
    d = workdir(home, {})
    pid, fd = spawn_pty(home, ["run", "--", "sh", "-c", "trap '' TERM; echo step-started; sleep 4; echo finished"],
                        cwd=d)
    read_until(fd, b"step-started")
    os.write(fd, b"\x03")
    read_until(fd, b"cancelling")
    os.write(fd, b"\x03")
    rc, rest = drain_and_wait(pid, fd)
    assert rc == 130 and b"detached" in rest


def test_detach_logs_ps_workers_json(home):
    d = workdir(home, {})
    p = k(home, "run", "--detach", "--", "sh", "-c", "echo hello-from-detached", cwd=d)
    assert p.returncode == 0
    job = int(p.stdout.decode().strip())
    f = k(home, "logs", "-f", job)
    assert f.returncode == 0 and b"hello-from-detached" in f.stdout
    assert b"hello-from-detached" in k(home, "logs", job).stdout
    assert b"hello-from-detached" in k(home, "logs", "%d/default" % job).stdout
    missing = k(home, "logs", "--attempt", "9", job)
    assert missing.returncode == 1 and missing.stdout == b"" and b"No log" in missing.stderr
    ps = json.loads(k(home, "ps", "--json", "--state", "succeeded").stdout)
    assert job in [j["id"] for j in ps["jobs"]]
    table = k(home, "ps").stdout.decode()
    assert re.search(r"^%d\s" % job, table, re.M)
    workers = json.loads(k(home, "workers", "--json").stdout)["workers"]
    assert any(w["name"] == "local" and w["state"] == "online" for w in workers)
    assert b"local" in k(home, "workers").stdout


def test_retry_and_cancel(home):
    d = workdir(home, {})
    p = k(home, "run", "--", "sh", "-c", "echo attempt; exit 7", cwd=d)
    assert p.returncode == 7
    job = json.loads(k(home, "ps", "--json").stdout)["jobs"][0]["id"]
    r = k(home, "retry", "--json", job)
    assert r.returncode == 0 and json.loads(r.stdout)["retried"] == 1
    f = k(home, "logs", "-f", job)
    assert f.returncode == 7
    t = json.loads(k(home, "ps", "--json").stdout)["jobs"][0]
    assert t["id"] == job and t["state"] == "failed"
    q = k(home, "run", "--detach", "--", "sleep", "300", cwd=d)
    sj = int(q.stdout)
    c = k(home, "cancel", sj)
    assert c.returncode == 0
    w = k(home, "watch", sj, timeout=60)  # not a terminal: a line per change, then the status
    assert w.returncode == 130 and b"cancelled" in w.stdout
    assert k(home, "cancel", "999999").returncode != 0


def test_artifacts_downloaded(home):
    d = workdir(home, {})
    out = os.path.join(d, "out")
    p = k(home, "run", "--artifact", "result/*", "-o", out, "--", "sh", "-c",
          "mkdir result; echo data > result/a.txt", cwd=d)
    assert p.returncode == 0, p.stderr.decode()
    assert open(os.path.join(out, "result", "a.txt")).read() == "data\n"
    job = json.loads(k(home, "ps", "--json").stdout)["jobs"][0]["id"]
    arts = json.loads(k(home, "artifacts", "--json", job).stdout)["artifacts"]
    assert len(arts) == 1
    out2 = os.path.join(d, "out2")
    assert k(home, "artifacts", job, "-o", out2).returncode == 0
    assert os.path.exists(os.path.join(out2, "result", "a.txt"))


def test_watch_renders_and_updates_in_a_terminal(home):
    d = workdir(home, {})
    p = k(home, "run", "--detach", "--", "sh", "-c", "sleep 1.5; echo done", cwd=d)
    job = int(p.stdout)
    pid, fd = spawn_pty(home, ["watch", str(job)])
    screen = read_until(fd, b"running")
    rc, rest = drain_and_wait(pid, fd)
    screen += rest
    assert rc == 0
    assert b"\x1b[2J" in screen  # redrawn in place
    last = screen.rsplit(b"\x1b[2J", 1)[1]
    assert b"succeeded" in last and b"default" in last


def test_top_renders_live_and_quits(home):
    d = workdir(home, {})
    p = k(home, "run", "--detach", "--", "sh", "-c", "sleep 3", cwd=d)
    job = int(p.stdout)
    pid, fd = spawn_pty(home, ["top"])
    screen = read_until(fd, b"QUEUE")
    screen = read_until(fd, b"local", buf=screen)
    screen = read_until(fd, b"/1 warm", buf=screen)  # the local worker's pool fill: ready/target
    screen = read_until(fd, b"running", buf=screen)  # the job's task, live
    assert str(job).encode() in screen
    # It goes on updating: the task ends and leaves the running list.
    screen = read_until(fd, b"(no running tasks)", timeout=20, buf=screen)
    os.write(fd, b"q")
    rc, _ = drain_and_wait(pid, fd)
    assert rc == 0


EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "examples", "*", "kiln.yml")))


@pytest.mark.parametrize("jobfile", EXAMPLES, ids=lambda p: os.path.basename(os.path.dirname(p)))
def test_example_runs_green(home, jobfile):
    p = k(home, "run", cwd=os.path.dirname(jobfile), timeout=300)
    assert p.returncode == 0, (p.stdout.decode()[-2000:], p.stderr.decode()[-2000:])


BAD = sorted(glob.glob(os.path.join(ROOT, "tests", "jobfiles", "bad", "*.yml")))


@pytest.mark.parametrize("path", BAD, ids=os.path.basename)
def test_broken_jobfile_is_one_located_line(home, path):
    p = k(home, "run", "-f", path)
    assert p.returncode == 1
    lines = p.stderr.decode().splitlines()
    assert len(lines) == 1 and matches(lines[0], path + ":" + expectation(path)), lines


def test_help_everywhere_and_errors_are_one_line(home):
    for verb in ("run", "up", "ps", "logs", "watch", "cancel", "retry", "artifacts", "workers", "top"):
        h = k(home, "help", verb)
        assert h.returncode == 0 and h.stdout.startswith(b"Usage: kiln " + verb.encode()), verb
        assert k(home, verb, "--help").stdout == h.stdout
    e = k(home, "logs", "not-a-job")
    assert e.returncode == 2 and len(e.stderr.decode().strip().splitlines()) == 1
    e = k(home, "run", "--timeout", "soon", "--", "true")
    assert e.returncode == 2 and len(e.stderr.decode().strip().splitlines()) == 1


def test_stderr_frames_go_to_stderr(home):
    # The CLI side of stream separation (docs/cli.md): a frame in the log is
    # written to stderr; other escape sequences (colours) stay on stdout.
    d = workdir(home, {})
    script = ("printf 'a\\033[31mred\\033[0m\\n'; printf '\\033]kiln;err;4\\007err\\n'; "
              "printf 'b\\033]kiln;err;x\\007\\n'; printf '\\033]kiln;err;3\\007'; printf 'e2\\nc\\n'")
    p = k(home, "run", "-q", "--", "sh", "-c", script, cwd=d)
    assert p.returncode == 0
    assert p.stdout == b"a\x1b[31mred\x1b[0m\nb\x1b]kiln;err;x\x07\nc\n"
    assert p.stderr == b"err\ne2\n"


def test_secrets_and_tokens_through_kiln_up(home):
    k(home, "run", "--", "true", cwd=workdir(home, {}))  # a server is up
    value = "s3cr3t-%s" % uuid.uuid4().hex
    s = k(home, "secret", "set", "CLI_TEST_SECRET", input=value.encode())
    assert s.returncode == 0, s.stderr.decode()
    assert value.encode() not in s.stdout + s.stderr
    assert b"CLI_TEST_SECRET" in k(home, "secret", "ls").stdout
    p = k(home, "run", "--secret", "CLI_TEST_SECRET", "--", "sh", "-c", "echo v=$CLI_TEST_SECRET",
          cwd=workdir(home, {}))
    assert p.returncode == 0 and b"v=" in p.stdout and value.encode() not in p.stdout
    assert k(home, "secret", "rm", "CLI_TEST_SECRET").returncode == 0
    assert b"CLI_TEST_SECRET" not in k(home, "secret", "ls").stdout
    t = json.loads(k(home, "token", "ls", "--json").stdout)["tokens"]
    assert any(x["kind"] == "admin" and x["name"] == "kiln up" for x in t)
