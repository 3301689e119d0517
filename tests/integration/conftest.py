"""Shared fixtures for kiln's integration tests: they drive the real `kiln`
binary (KILN_BIN, set by tests/run) and start whatever they need themselves."""
import os
import shutil
import subprocess
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KILN = os.environ.get("KILN_BIN", os.path.join(ROOT, "build", "kiln"))
BUILD = os.environ.get("KILN_BUILD", os.path.dirname(KILN))


def kiln_cmd(*args):
    return [KILN] + [str(a) for a in args]


def run(args, check=False, timeout=120, **kw):
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    p = subprocess.run(args, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise AssertionError("%r exited %d\nstdout: %s\nstderr: %s" % (
            args, p.returncode, p.stdout, p.stderr))
    return p


def kiln(*args, **kw):
    return run(kiln_cmd(*args), **kw)


def have_root():
    return os.geteuid() == 0


needs_root = pytest.mark.skipif(not have_root(), reason="needs root (namespaces, cgroups, mounts)")


@pytest.fixture
def tmpdir_path():
    d = tempfile.mkdtemp(prefix="kiln-test-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def sandbox_dir(tmpdir_path):
    """A private sandbox state directory so that tests do not see each other's
    sandboxes (and the leak checks stay exact)."""
    d = os.path.join(tmpdir_path, "sandboxes")
    os.makedirs(d)
    old = os.environ.get("KILN_SANDBOX_DIR")
    os.environ["KILN_SANDBOX_DIR"] = d
    yield d
    if old is None:
        del os.environ["KILN_SANDBOX_DIR"]
    else:
        os.environ["KILN_SANDBOX_DIR"] = old
