"""`kiln validate` through the real binary: every jobfile in tests/jobfiles/
carries its expected output in a first line `# expect: …`, and the examples
must validate (and, where the host has the tools, their steps must work)."""
import glob
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request

import pytest

from conftest import ROOT, kiln

JOBFILES = os.path.join(ROOT, "tests", "jobfiles")
EXAMPLES = os.path.join(ROOT, "examples")


def expectation(path):
    with open(path) as f:
        first = f.readline().rstrip("\n")
    assert first.startswith("# expect: "), "%s: first line must be '# expect: …'" % path
    return first[len("# expect: "):]


def matches(line, pattern):
    """pattern must match the start of line; ' ... ' stands for any text."""
    parts = pattern.split(" ... ")
    if not line.startswith(parts[0]):
        return False
    pos = len(parts[0])
    for p in parts[1:]:
        i = line.find(p, pos)
        if i < 0:
            return False
        pos = i + len(p)
    return True


BAD = sorted(glob.glob(os.path.join(JOBFILES, "bad", "*.yml")))
GOOD = sorted(glob.glob(os.path.join(JOBFILES, "good", "*.yml")))


def test_corpus_is_there():
    # The brief's list of broken jobfiles; a missing one is a lost test.
    names = {os.path.basename(p)[:-4] for p in BAD}
    for n in ("syntax-error", "unknown-key", "wrong-type", "missing-steps", "bad-duration", "bad-size",
              "duplicate-key", "duplicate-step-name", "run-and-argv", "billion-laughs", "too-deep",
              "matrix-too-large", "exclude-unknown-axis", "health-two-kinds"):
        assert n in names


@pytest.mark.parametrize("path", BAD, ids=lambda p: os.path.basename(p))
def test_bad_jobfile(path):
    p = kiln("validate", "-f", path)
    err = p.stderr.decode()
    assert p.returncode == 1, err
    assert p.stdout == b""
    lines = err.splitlines()
    assert len(lines) == 1, err
    want = path + ":" + expectation(path)
    assert matches(lines[0], want), "\n got: %s\nwant: %s" % (lines[0], want)


@pytest.mark.parametrize("path", GOOD, ids=lambda p: os.path.basename(p))
def test_good_jobfile(path):
    p = kiln("validate", "-f", path)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout.decode().strip() == expectation(path)
    assert p.stderr == b""


@pytest.mark.parametrize("path", GOOD, ids=lambda p: os.path.basename(p))
def test_json_round_trip(path, tmpdir_path):
    """The normalized spec is itself a valid jobfile (JSON is YAML) and
    normalizes to itself."""
    p = kiln("validate", "-f", path, "--json", check=True)
    spec = json.loads(p.stdout)
    assert all(isinstance(s, dict) for s in spec["steps"])
    out = os.path.join(tmpdir_path, "spec.json")
    with open(out, "wb") as f:
        f.write(p.stdout)
    q = kiln("validate", "-f", out, "--json", check=True)
    assert json.loads(q.stdout) == spec


def test_full_normalization():
    spec = json.loads(kiln("validate", "-f", os.path.join(JOBFILES, "good", "full.yml"), "--json",
                           check=True).stdout)
    assert spec["steps"][0] == {"run": "./configure"}
    assert spec["services"][1]["health"] == {"command": "redis-cli -p 6380 ping"}
    assert spec["matrix"]["axes"] == {"CC": ["gcc", "clang"], "OPT": ["O0", "O2"]}
    assert spec["matrix"]["exclude"] == [{"CC": "clang", "OPT": "O0"}]
    assert spec["env"]["PY"] == "3.10"          # kept as written, not the float 3.1
    assert spec["labels"]["kvm"] == "true"
    assert spec["steps"][2]["env"]["VERBOSE"] == "1"
    assert spec["retry"] == {"max": 2, "on": ["failed", "timed_out"]}
    assert spec["resources"]["pids"] == 512 and spec["resources"]["cpus"] == 0.5


def test_tasks_output():
    tasks = json.loads(kiln("validate", "-f", os.path.join(JOBFILES, "good", "full.yml"), "--tasks",
                            check=True).stdout)
    assert [t["name"] for t in tasks] == ["lint", "integration", "CC=gcc,OPT=O0,SANITIZE=address",
                                          "CC=gcc,OPT=O2,SANITIZE=address", "CC=clang,OPT=O2"]
    assert tasks[1]["slots"] == 2 and tasks[1]["env"]["SUITE"] == "integration"
    assert tasks[2]["env"]["CC"] == "gcc" and tasks[2]["env"]["LANG"] == "C.UTF-8"


def test_default_file_and_missing_file(tmpdir_path):
    p = kiln("validate", cwd=tmpdir_path)
    assert p.returncode == 1
    assert p.stderr.decode().strip() == "kiln.yml: cannot read jobfile: No such file or directory"
    with open(os.path.join(tmpdir_path, "kiln.yml"), "w") as f:
        f.write("steps: [make]\n")
    p = kiln("validate", cwd=tmpdir_path)
    assert p.returncode == 0 and p.stdout == b"ok: 1 task\n"


def test_usage_errors():
    assert kiln("validate", "--frobnicate").returncode == 2
    assert kiln("validate", "extra").returncode == 2
    assert kiln("validate", "--json", "--tasks").returncode == 2
    p = kiln("validate", "--help", check=True)
    assert b"--json" in p.stdout


EXAMPLE_DIRS = sorted(d for d in glob.glob(os.path.join(EXAMPLES, "*")) if os.path.isdir(d))


def test_examples_exist():
    assert {os.path.basename(d) for d in EXAMPLE_DIRS} >= {"c-project", "service", "matrix"}


@pytest.mark.parametrize("d", EXAMPLE_DIRS, ids=lambda d: os.path.basename(d))
def test_example_validates(d):
    p = kiln("validate", cwd=d)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout.startswith(b"ok: ")


# Until `kiln run` exists, the examples' steps are run here directly, with
# each task's environment, so that an example that cannot work fails now.

def run_steps(spec, task, cwd):
    env = dict(os.environ, **task["env"])
    for step in spec["steps"]:
        e = dict(env, **step.get("env", {}))
        if "run" in step:
            cmd = ["sh", "-ec", step["run"]]
        else:
            cmd = step["argv"]
        p = subprocess.run(cmd, cwd=cwd, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        assert p.returncode == 0, "%s: %s" % (step, p.stdout.decode())


def copy_example(name, tmpdir_path):
    dst = os.path.join(tmpdir_path, name)
    shutil.copytree(os.path.join(EXAMPLES, name), dst)
    spec = json.loads(kiln("validate", "--json", cwd=dst, check=True).stdout)
    tasks = json.loads(kiln("validate", "--tasks", cwd=dst, check=True).stdout)
    return dst, spec, tasks


def need(*tools):
    for t in tools:
        if not shutil.which(t):
            pytest.skip("needs %s" % t)


def test_example_c_project_steps(tmpdir_path):
    need("make", "cc")
    d, spec, tasks = copy_example("c-project", tmpdir_path)
    run_steps(spec, tasks[0], d)
    for a in spec["artifacts"]:
        assert glob.glob(os.path.join(d, a)), "artifact %s missing" % a


def test_example_matrix_steps(tmpdir_path):
    need("gcc")
    d, spec, tasks = copy_example("matrix", tmpdir_path)
    assert len(tasks) == 6
    for t in tasks:
        if t["env"].get("SANITIZE") == "address" and subprocess.run(
                ["gcc", "-fsanitize=address,undefined", "-x", "c", "-o", "/dev/null", "-"],
                input=b"int main(void){return 0;}", stderr=subprocess.DEVNULL).returncode != 0:
            continue
        run_steps(spec, t, d)


def test_example_service_steps(tmpdir_path):
    need("python3")
    d, spec, tasks = copy_example("service", tmpdir_path)
    svc = spec["services"][0]
    proc = subprocess.Popen(svc["argv"], cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        url = svc["health"]["http"]
        for _ in range(svc["health"]["retries"]):
            try:
                urllib.request.urlopen(url, timeout=2).read()
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("service never became healthy at %s" % url)
        run_steps(spec, tasks[0], d)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


def test_merge_keys_and_aliases():
    spec = json.loads(kiln("validate", "-f", os.path.join(JOBFILES, "good", "merge-keys.yml"), "--json",
                           check=True).stdout)
    assert "x-env" not in spec and "x-step" not in spec
    build, test = spec["steps"]
    assert build == {"name": "build", "run": "make", "timeout": "10m", "env": {"CC": "gcc", "PY": "3.10"}}
    assert test["timeout"] == "20m" and test["env"]["PY"] == "3.10"
