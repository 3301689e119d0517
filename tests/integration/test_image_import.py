"""kiln image import (OCI layouts, docker save archives, rootfs tarballs),
hostile layers, and revisions: rollback, rm, keep, atomic switches."""
import json
import os
import subprocess
import threading

from conftest import KILN, kiln, needs_root
from imagelib import (busybox_tar, dir_to_tar, docker_save_tar, file_digest, rootfs_path, show,
                      snapshot, tar_bytes, write_oci_layout)

pytestmark = needs_root

LAYER1 = [
    ("etc", "dir", None, 0o755),
    ("etc/a", "file", b"one", 0o644),
    ("etc/b", "file", b"bee", 0o644),
    ("etc/hard", "hardlink", "etc/a", 0o644),
    ("keep", "dir", None, 0o755),
    ("keep/x", "file", b"x", 0o644),
    ("keep/y", "file", b"y", 0o644),
    ("opq", "dir", None, 0o755),
    ("opq/old1", "file", b"o", 0o644),
    ("opq/sub", "dir", None, 0o755),
    ("opq/sub/old2", "file", b"o2", 0o644),
    ("gonedir", "dir", None, 0o755),
    ("gonedir/f", "file", b"g", 0o644),
    ("lnk", "symlink", "/etc/a", 0o777),
    ("usr", "dir", None, 0o755),
    ("usr/bin", "dir", None, 0o755),
    ("usr/bin/tool", "file", b"tool", 0o4755),
    ("home", "dir", None, 0o755),
    ("home/u", "dir", None, 0o700, 1000),
    ("home/u/f", "file", b"mine", 0o600, 1000),
]
LAYER2 = [
    ("etc", "dir", None, 0o755),
    ("etc/.wh.b", "file", b"", 0o644),
    ("etc/a", "file", b"two", 0o640),
    ("opq", "dir", None, 0o755),
    ("opq/.wh..wh..opq", "file", b"", 0o644),
    ("opq/new1", "file", b"n", 0o644),
    ("keep", "dir", None, 0o755),
    ("keep/z", "file", b"z", 0o644),
    (".wh.gonedir", "file", b"", 0o644),
]
EXPECTED = {
    "etc": ("dir", None, 0o755, 0),
    "etc/a": ("file", b"two", 0o640, 0),
    "etc/hard": ("file", b"one", 0o644, 0),
    "keep": ("dir", None, 0o755, 0),
    "keep/x": ("file", b"x", 0o644, 0),
    "keep/y": ("file", b"y", 0o644, 0),
    "keep/z": ("file", b"z", 0o644, 0),
    "opq": ("dir", None, 0o755, 0),
    "opq/new1": ("file", b"n", 0o644, 0),
    "lnk": ("symlink", "/etc/a", None, 0),
    "usr": ("dir", None, 0o755, 0),
    "usr/bin": ("dir", None, 0o755, 0),
    "usr/bin/tool": ("file", b"tool", 0o4755, 0),
    "home": ("dir", None, 0o755, 0),
    "home/u": ("dir", None, 0o700, 1000),
    "home/u/f": ("file", b"mine", 0o600, 1000),
}


def imp(data, name, src, *extra):
    return kiln("image", "import", name, src, "--data", data, *extra)


def test_oci_layout_whiteouts_and_opaque_dirs_give_the_exact_tree(tmpdir_path):
    data = os.path.join(tmpdir_path, "data")
    layout = write_oci_layout(os.path.join(tmpdir_path, "oci"), [tar_bytes(LAYER1), tar_bytes(LAYER2, gz=True)])
    p = imp(data, "oci", layout, "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["committed"] and out["revision"] == 1
    assert snapshot(rootfs_path(data, "oci")) == EXPECTED
    info = show(data, "oci")
    rev = info["revisions"][0]
    assert rev["current"] and rev["import"]["format"] == "oci"
    # The digest is that of the revision's deterministic archive.
    arch = os.path.join(os.path.dirname(rev["rootfs"]), "rootfs.tar.zst")
    assert rev["digest"] == file_digest(arch) == info["digest"]

    # The same image as a tar of the layout, and as a docker save archive:
    # the same tree, the same bytes.
    tar = os.path.join(tmpdir_path, "oci.tar")
    with open(tar, "wb") as f:
        f.write(dir_to_tar(layout))
    docker = os.path.join(tmpdir_path, "docker.tar")
    with open(docker, "wb") as f:
        f.write(docker_save_tar([tar_bytes(LAYER1), tar_bytes(LAYER2)]))
    for name, src, fmt in (("ocitar", tar, "oci"), ("docker", docker, "docker")):
        p = imp(data, name, src)
        assert p.returncode == 0, p.stderr
        assert snapshot(rootfs_path(data, name)) == EXPECTED, name
        info2 = show(data, name)
        assert info2["revisions"][0]["import"]["format"] == fmt
        assert info2["digest"] == info["digest"], name


def hostile_layers(outside):
    """name: (layer, why it is refused)"""
    return {
        "dotdot": ([("../escape", "file", b"x", 0o644)], "'..' component"),
        "absolute": ([("/etc/escape", "file", b"x", 0o644)], "absolute path"),
        "through-symlink": ([("l", "symlink", outside, 0o777), ("l/pwned", "file", b"x", 0o644)],
                            "goes through the symlink 'l'"),
        "device": ([("dev", "dir", None, 0o755), ("dev/mem", "chr", None, 0o666)],
                   "'dev/mem' is a character device: refused"),
        "hardlink-out": ([("h", "hardlink", "../../etc/passwd", 0o644)], "points outside the target"),
        "bad-whiteout": ([(".wh..", "file", b"", 0o644)], "names no entry"),
    }


def test_hostile_layers_are_refused_and_current_stays(tmpdir_path):
    data = os.path.join(tmpdir_path, "data")
    outside = os.path.join(tmpdir_path, "outside")
    os.makedirs(outside)
    good = write_oci_layout(os.path.join(tmpdir_path, "good"), [tar_bytes(LAYER1)])
    assert imp(data, "img", good).returncode == 0
    digest = show(data, "img")["digest"]

    for what, (layer, why) in sorted(hostile_layers(outside).items()):
        layout = write_oci_layout(os.path.join(tmpdir_path, "bad-" + what),
                                  [tar_bytes(LAYER1), tar_bytes(layer)])
        p = imp(data, "img", layout)
        err = p.stderr.decode()
        assert p.returncode == 1, (what, err)
        assert "step 'import' failed" in err and why in err and "Log: " in err, (what, err)
        assert "current revision of 'img' is unchanged: 1" in err, (what, err)
        log = err.split("Log: ")[1].split("\n")[0]
        assert os.path.exists(log), what
        info = show(data, "img")
        assert info["current"] == 1 and info["digest"] == digest, what
        assert info["last_build"]["status"] == "failed" and info["last_build"]["step"] == "import"
        assert [r["revision"] for r in info["revisions"]] == [1], what
    assert os.listdir(outside) == []
    assert not os.path.exists(os.path.join(tmpdir_path, "data", "images", "img", "revs", "escape"))

    # A layer whose bytes do not match the manifest's digest.
    layout = write_oci_layout(os.path.join(tmpdir_path, "tampered"), [tar_bytes(LAYER1)], bad_digest_at=0)
    p = imp(data, "img", layout)
    assert p.returncode == 1 and b"refused" in p.stderr, p.stderr

    # A symlink in one layer and a directory of the same name in the next:
    # the directory replaces the link; nothing is written through it.
    layout = write_oci_layout(os.path.join(tmpdir_path, "cross"), [
        tar_bytes([("evil", "symlink", outside, 0o777)]),
        tar_bytes([("evil", "dir", None, 0o755), ("evil/pwned", "file", b"x", 0o644)])])
    p = imp(data, "cross", layout)
    assert p.returncode == 0, p.stderr
    root = rootfs_path(data, "cross")
    assert os.path.isdir(os.path.join(root, "evil")) and not os.path.islink(os.path.join(root, "evil"))
    assert os.listdir(outside) == []




def test_revisions_keep_rollback_and_rm(tmpdir_path, sandbox_dir):
    data = os.path.join(tmpdir_path, "data")
    tars = [busybox_tar(tmpdir_path, t) for t in ("r1", "r2", "r3", "r4")]
    for t in tars:
        p = imp(data, "bb", t, "--keep", "3", "--validate", "test -f /etc/rev", "--tries", "2")
        assert p.returncode == 0, p.stderr
    info = show(data, "bb")
    assert [r["revision"] for r in info["revisions"]] == [2, 3, 4]
    assert info["current"] == 4
    assert info["revisions"][2]["validation"]["passed"] == 2
    assert info["revisions"][2]["import"]["format"] == "rootfs"

    def rev_in_image():
        p = kiln("sandbox", "run", "--image", os.path.join(data, "images", "bb", "current", "rootfs"),
                 "--", "cat", "/etc/rev", check=True)
        return p.stdout.decode().strip()

    assert rev_in_image() == "r4"
    assert kiln("image", "rollback", "bb", "--data", data).returncode == 0
    assert show(data, "bb")["current"] == 3 and rev_in_image() == "r3"
    assert kiln("image", "rollback", "bb", "2", "--data", data).returncode == 0
    assert rev_in_image() == "r2"
    p = kiln("image", "rollback", "bb", "1", "--data", data)
    assert p.returncode == 1 and b"no revision 1" in p.stderr
    p = kiln("image", "rm", "bb@2", "--data", data)
    assert p.returncode == 1 and b"roll back first" in p.stderr, p.stderr
    assert kiln("image", "rm", "bb@4", "--data", data).returncode == 0
    assert [r["revision"] for r in show(data, "bb")["revisions"]] == [2, 3]
    ls = json.loads(kiln("image", "ls", "--data", data, "--json", check=True).stdout)
    assert [(i["name"], i["current"]) for i in ls] == [("bb", 2)]
    assert kiln("image", "rm", "bb", "--data", data).returncode == 0
    assert json.loads(kiln("image", "ls", "--data", data, "--json", check=True).stdout) == []


def test_rollback_is_atomic_while_jobs_run(tmpdir_path, sandbox_dir):
    data = os.path.join(tmpdir_path, "data")
    for t in ("A", "B"):
        assert imp(data, "bb", busybox_tar(tmpdir_path, t)).returncode == 0
    current = os.path.join(data, "images", "bb", "current")
    image = os.path.join(current, "rootfs")

    # A job started on B keeps B after the switch to A.
    job = subprocess.Popen([KILN, "sandbox", "run", "--image", image, "--", "sh", "-c",
                            "cat /etc/rev; read x; cat /etc/rev; ls /bin/busybox"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert job.stdout.readline() == b"B\n"
    assert kiln("image", "rollback", "bb", "--data", data).returncode == 0
    p = kiln("sandbox", "run", "--image", image, "--", "cat", "/etc/rev", check=True)
    assert p.stdout == b"A\n"

    # Readers never see a missing or half-switched current while it flips.
    seen, errors, stop = set(), [], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                with open(os.path.join(image, "etc", "rev")) as f:
                    seen.add(f.read().strip())
            except OSError as e:
                errors.append(e)

    th = threading.Thread(target=reader)
    th.start()
    for i in range(30):
        assert kiln("image", "rollback", "bb", "2" if i % 2 == 0 else "1", "--data", data).returncode == 0
    stop.set()
    th.join()
    assert errors == [] and seen == {"A", "B"}, (errors[:3], seen)

    out, err = job.communicate(b"go\n", timeout=30)
    assert job.returncode == 0, err
    assert out == b"B\n/bin/busybox\n", out


def test_rootfs_tarball_skips_dev_nodes_but_refuses_others(tmpdir_path):
    data = os.path.join(tmpdir_path, "data")
    # What mmdebstrap's and docker export's tarballs carry in /dev.
    good = os.path.join(tmpdir_path, "rootfs.tar")
    with open(good, "wb") as f:
        f.write(tar_bytes([("dev", "dir", None, 0o755), ("dev/null", "chr", None, 0o666),
                           ("etc", "dir", None, 0o755), ("etc/os-release", "file", b"ID=test\n", 0o644),
                           ("etc/localtime", "symlink", "/usr/share/zoneinfo/UTC", 0o777)]))
    p = imp(data, "plain", good)
    assert p.returncode == 0, p.stderr
    assert snapshot(rootfs_path(data, "plain")) == {
        "dev": ("dir", None, 0o755, 0),
        "etc": ("dir", None, 0o755, 0),
        "etc/os-release": ("file", b"ID=test\n", 0o644, 0),
        "etc/localtime": ("symlink", "/usr/share/zoneinfo/UTC", None, 0),
    }
    log = open(show(data, "plain")["revisions"][0]["build_log"]).read()
    assert "skipped 1 device nodes in /dev" in log
    for what, entries in (("elsewhere", [("etc", "dir", None, 0o755), ("etc/null", "chr", None, 0o666)]),
                          ("deeper", [("dev", "dir", None, 0o755), ("dev/x", "dir", None, 0o755),
                                      ("dev/x/mem", "chr", None, 0o666)])):
        bad = os.path.join(tmpdir_path, what + ".tar")
        with open(bad, "wb") as f:
            f.write(tar_bytes(entries))
        p = imp(data, "plain", bad)
        assert p.returncode == 1 and b"character device: refused" in p.stderr, (what, p.stderr)
    assert show(data, "plain")["current"] == 1


def test_relative_data_dir_with_validation(tmpdir_path, sandbox_dir):
    tar = busybox_tar(tmpdir_path, "rel")
    p = kiln("image", "import", "rel", tar, "--data", "reldata", "--validate", "test -f /etc/rev", "--tries", "1",
             cwd=tmpdir_path)
    assert p.returncode == 0, p.stderr
    info = show(os.path.join(tmpdir_path, "reldata"), "rel")
    assert info["current"] == 1 and info["revisions"][0]["build_log"].startswith("/")


def test_rollback_while_a_worker_runs_a_job(tmpdir_path):
    from kilnapi import Server, submit, wait_for
    from workerlib import WorkerProc, task_log, wait_job

    data = os.path.join(tmpdir_path, "data")
    for t in ("A", "B"):
        assert imp(data, "bb", busybox_tar(tmpdir_path, t)).returncode == 0
    srv = Server().start()
    image = os.path.join(data, "images", "bb", "current", "rootfs")
    w = WorkerProc(srv, "rb", args=["--image", "bb=" + image, "--pool", "bb=0", "--slots", "2"]).start()
    try:
        # Long enough for the rollback and a second job to happen meanwhile.
        step = "cat /etc/rev; sleep 4; cat /etc/rev"
        j1 = submit(srv, {"name": "before", "image": "bb", "steps": [{"run": step}]})
        t1 = j1["tasks"][0]["id"]
        assert wait_for(lambda: task_log(srv, t1).startswith(b"B\n"), timeout=30), w.log()
        assert kiln("image", "rollback", "bb", "--data", data).returncode == 0
        j2 = submit(srv, {"name": "after", "image": "bb", "steps": [{"run": "cat /etc/rev"}]})
        done2 = wait_job(srv, j2["id"], timeout=30)
        assert task_log(srv, done2["tasks"][0]["id"]) == b"A\n"
        done1 = wait_job(srv, j1["id"], timeout=30)
        assert done1["tasks"][0]["state"] == "succeeded"
        assert task_log(srv, t1) == b"B\nB\n"
    finally:
        w.stop()
        srv.cleanup()
