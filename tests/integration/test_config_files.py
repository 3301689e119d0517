"""`--config FILE` for kiln server and kiln worker: "key = value" lines whose
keys are the long options; the command line wins for single-valued options
and adds to repeatable ones; errors name the file and line."""
import os
import tempfile

from conftest import kiln, needs_root
from kilnapi import Server, wait_for
from workerlib import WorkerProc


def write(text):
    fd, path = tempfile.mkstemp(prefix="kiln-conf-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def test_server_reads_its_options_from_a_config_file():
    conf = write("# the lease TTL from the file\nlease-ttl = 7s\n  max-body = 2M  \n")
    srv = Server(args=["--config", conf]).start()
    try:
        # Logged right after the "listening" line the start waits for.
        assert wait_for(lambda: "lease TTL 7.0s" in srv.log(), timeout=10), srv.log()
    finally:
        srv.cleanup()
        os.unlink(conf)


def test_bad_config_files_name_file_and_line(tmpdir_path):
    for text, words in (("lease-ttl 7s\n", b"expected 'key = value'"),
                        ("# ok\nlease-tll = 7s\n", b"unknown option 'lease-tll'"),
                        ("config = /etc/x\n", b"unknown option 'config'")):
        conf = write(text)
        try:
            p = kiln("server", "--config", conf, "--data", tmpdir_path)
            assert p.returncode == 2 and words in p.stderr, p.stderr
            if words != b"expected 'key = value'":
                assert (conf + ":").encode() in p.stderr, p.stderr
        finally:
            os.unlink(conf)
    p = kiln("server", "--config", "/nonexistent/kiln.conf", "--data", tmpdir_path)
    assert p.returncode == 2 and b"/nonexistent/kiln.conf" in p.stderr, p.stderr


@needs_root
def test_worker_options_from_a_config_file_and_the_command_line_wins():
    srv = Server().start()
    conf = write("slots = 3\nlabels = from=file\nname = file-name\npool = host=0\n")
    w = WorkerProc(srv, "cli-name", args=["--config", conf, "--slots", "2"])
    try:
        w.start()
        workers = srv.client().get("/api/v1/workers").json()["workers"]
        me = [x for x in workers if x["name"] == "cli-name"]
        assert me and me[0]["slots"] == 2 and me[0]["labels"] == {"from": "file"}, workers
    finally:
        w.stop()
        srv.cleanup()
        os.unlink(conf)
