"""The sandbox escape battery: runs tests/probe/escape-probe inside real
`kiln sandbox run` sandboxes and reports each of its cases as a test.

Three sandboxes are probed: the host image with --network none, a minimal
busybox image (with a setuid-root binary in it) with --network none, and the
host image with --network nat. The host side provides what the probe must not
reach: a TCP listener on all host addresses, a `sleep` process, a file under
/tmp. A separate sandbox runs `kill -9 -1` and a host process must survive it.
"""
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading

import pytest

from conftest import BUILD, kiln_cmd, needs_root
from sandboxlib import make_busybox_rootfs

PROBE_DIR = os.path.join(BUILD, "tests", "probe")
PROBE = os.path.join(PROBE_DIR, "escape-probe")

pytestmark = needs_root

CONFIGS = ("host-none", "image-none", "host-nat")


def host_address():
    """The host's first global IPv4 address, or None."""
    try:
        out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
    except OSError:
        return None
    for line in out.splitlines():
        f = line.split()
        if "inet" in f:
            return f[f.index("inet") + 1].split("/")[0]
    return None


HOST_ADDR = host_address()


def probe_args(config, port=1, pid=1, hostfile="/x"):
    """The probe's options for a configuration (placeholders at collection)."""
    net = "nat" if config.endswith("-nat") else "none"
    args = ["--network", net, "--host-port", str(port), "--host-pid", str(pid),
            "--host-file", hostfile]
    if net == "nat" and HOST_ADDR:
        args += ["--host-addr", "%s:%d" % (HOST_ADDR, port)]
    if config.startswith("image-"):
        args += ["--setuid-bin", "/bin/suid-probe"]
    return args


def list_cases(config):
    """The case names the probe reports for a configuration; asked of the
    probe itself so that this file never drifts from it."""
    if not os.path.exists(PROBE):
        return ["probe-built"]
    p = subprocess.run([PROBE, "--list"] + probe_args(config), stdout=subprocess.PIPE, text=True)
    return p.stdout.split() or ["probe-built"]


class Listener:
    """Accepts on 0.0.0.0:port (so on the loopback and every host address)
    and counts what arrives: nothing from a sandbox ever may."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:
                c, addr = self.sock.accept()
            except OSError:
                return
            self.accepted.append(addr)
            c.close()

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class Env:
    """Host-side fixtures shared by every probe run of this module."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.sandbox_dir = os.path.join(tmp, "sandboxes")
        os.makedirs(self.sandbox_dir)
        self.listener = Listener()
        self.sleeper = subprocess.Popen(["sleep", "600"])
        # Under /tmp on purpose: the host image masks /tmp, a directory image
        # never had it.
        fd, self.hostfile = tempfile.mkstemp(prefix="kiln-escape-secret-", dir="/tmp")
        os.write(fd, b"host secret\n")
        os.close(fd)
        self.rootfs = None
        self.results = {}

    def env(self):
        return dict(os.environ, KILN_SANDBOX_DIR=self.sandbox_dir)

    def image(self):
        """A busybox root file system with the probe and a setuid-root copy."""
        if self.rootfs is None:
            root = make_busybox_rootfs(os.path.join(self.tmp, "rootfs"))
            os.makedirs(os.path.join(root, "probe"), exist_ok=True)
            shutil.copy2(PROBE, os.path.join(root, "probe", "escape-probe"))
            suid = os.path.join(root, "bin", "suid-probe")
            shutil.copy2(PROBE, suid)
            os.chown(suid, 0, 0)
            os.chmod(suid, 0o4755)
            self.rootfs = root
        return self.rootfs

    def run_probe(self, config):
        if config in self.results:
            return self.results[config]
        args = probe_args(config, self.listener.port, self.sleeper.pid, self.hostfile)
        if config.startswith("image-"):
            root = self.image()
            sandbox = ["--image", root]
            before = sha256(os.path.join(root, "probe", "escape-probe"))
        else:
            sandbox = ["--image", "host", "--bind", "%s:/probe:ro" % PROBE_DIR]
            before = None
        net = "nat" if config.endswith("-nat") else "none"
        cmd = kiln_cmd("sandbox", "run", *sandbox, "--network", net, "--",
                       "/probe/escape-probe", *args)
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=self.env(), timeout=180)
        res = ProbeResult(config, cmd, p)
        if before is not None:
            res.image_intact = before == sha256(os.path.join(self.rootfs, "probe", "escape-probe"))
        self.results[config] = res
        return res

    def close(self):
        self.listener.close()
        self.sleeper.kill()
        self.sleeper.wait()
        os.unlink(self.hostfile)


class ProbeResult:
    def __init__(self, config, cmd, p):
        self.config = config
        self.cmd = cmd
        self.returncode = p.returncode
        self.stdout = p.stdout
        self.stderr = p.stderr
        self.image_intact = True
        self.lines = {}
        for line in p.stdout.splitlines():
            for verdict in ("PASS ", "FAIL "):
                if line.startswith(verdict):
                    name = line[len(verdict):].split(":", 1)[0]
                    self.lines.setdefault(name, line)

    def context(self):
        return "\n$ %s\nexit %d\n--- stdout\n%s--- stderr\n%s" % (
            " ".join(self.cmd), self.returncode, self.stdout, self.stderr)


@pytest.fixture(scope="module")
def escape_env():
    tmp = tempfile.mkdtemp(prefix="kiln-escape-")
    e = Env(tmp)
    yield e
    e.close()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.parametrize("config,case", [(c, n) for c in CONFIGS for n in list_cases(c)])
def test_escape(escape_env, config, case):
    assert os.path.exists(PROBE), "tests/probe/escape-probe was not built"
    res = escape_env.run_probe(config)
    line = res.lines.get(case)
    assert line is not None, "case %s reported nothing%s" % (case, res.context())
    assert line.startswith("PASS "), line + res.context()


@pytest.mark.parametrize("config", CONFIGS)
def test_probe_run_is_complete(escape_env, config):
    """The probe ran to its summary, reported only listed cases, and exited 0
    (kiln passes the command's exit status through)."""
    assert os.path.exists(PROBE), "tests/probe/escape-probe was not built"
    res = escape_env.run_probe(config)
    assert "escape-probe: " in res.stdout, "no summary" + res.context()
    unknown = set(res.lines) - set(list_cases(config))
    assert not unknown, "cases missing from --list: %s" % sorted(unknown)
    assert res.returncode == 0, res.context()
    # Whatever /proc/self/exe allowed, the shared image did not change.
    assert res.image_intact, "the image's probe binary was modified" + res.context()


def test_nothing_reached_the_host_listener(escape_env):
    for config in CONFIGS:
        escape_env.run_probe(config)
    lst = escape_env.listener
    assert lst.accepted == [], "connections from sandboxes: %r" % lst.accepted
    # The listener itself was reachable all along: the probe's refusals are the
    # sandbox's doing, not a dead listener's.
    targets = ["127.0.0.1"] + ([HOST_ADDR] if HOST_ADDR else [])
    for addr in targets:
        with socket.create_connection((addr, lst.port), timeout=2):
            pass
    for _ in range(100):
        if len(lst.accepted) == len(targets):
            break
        threading.Event().wait(0.05)
    assert len(lst.accepted) == len(targets), "the host listener is not accepting"
    assert escape_env.sleeper.poll() is None, "the host process died"


def test_kill_all_spares_the_host(escape_env):
    assert os.path.exists(PROBE), "tests/probe/escape-probe was not built"
    victim = subprocess.Popen(["sleep", "600"])
    try:
        p = subprocess.run(kiln_cmd("sandbox", "run", "--image", "host",
                                    "--bind", "%s:/probe:ro" % PROBE_DIR, "--",
                                    "/probe/escape-probe", "--kill-all"),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=escape_env.env(), timeout=60)
        out = "exit %d\n%s%s" % (p.returncode, p.stdout, p.stderr)
        assert "PASS kill-all" in p.stdout, out
        assert p.returncode == 0, out
        assert victim.poll() is None, "kill -9 -1 inside the sandbox killed a host process"
        assert escape_env.sleeper.poll() is None, "kill -9 -1 inside the sandbox killed a host process"
    finally:
        victim.kill()
        victim.wait()
