"""The CLI against an https:// server: a TLS-terminating relay (as a team's
reverse proxy would be) in front of a real `kiln server`, with a certificate
of a private CA. Requests with a body in memory (POST), from a file (the
workspace upload, PUT) and without (GET) all go through TLS; an unknown CA is
refused with a clear error."""
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading

import pytest

from conftest import kiln
from kilnapi import Server


def make_ca_and_cert(d):
    ca_key, ca_crt = os.path.join(d, "ca.key"), os.path.join(d, "ca.crt")
    key, csr, crt = os.path.join(d, "srv.key"), os.path.join(d, "srv.csr"), os.path.join(d, "srv.crt")
    ext = os.path.join(d, "ext.cnf")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "check": True}
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca_crt,
                    "-days", "2", "-subj", "/CN=kiln test CA"], **quiet)
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
                    "-subj", "/CN=127.0.0.1"], **quiet)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
                    "-out", crt, "-days", "2", "-extfile", ext], **quiet)
    return ca_crt, crt, key


class TlsRelay:
    """Accepts TLS on loopback and relays the bytes to a plain TCP port."""

    def __init__(self, target_port, crt, key):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(crt, key)
        self.target = target_port
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        try:
            t = self.ctx.wrap_socket(c, server_side=True)
        except (ssl.SSLError, OSError):
            c.close()
            return
        u = socket.create_connection(("127.0.0.1", self.target))

        def pump(src, dst):
            try:
                while True:
                    b = src.recv(65536)
                    if not b:
                        break
                    dst.sendall(b)
            except OSError:
                pass
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        threading.Thread(target=pump, args=(u, t), daemon=True).start()
        pump(t, u)

    def close(self):
        self.sock.close()


@pytest.fixture
def https_server():
    if not shutil.which("openssl"):
        pytest.skip("needs the openssl command to make a test CA")
    d = tempfile.mkdtemp(prefix="kiln-https-")
    srv = Server().start()
    ca, crt, key = make_ca_and_cert(d)
    relay = TlsRelay(srv.port, crt, key)
    yield srv, "https://127.0.0.1:%d" % relay.port, ca, d
    relay.close()
    srv.cleanup()
    shutil.rmtree(d, ignore_errors=True)


def cli_env(url, token, ca=None):
    env = dict(os.environ, KILN_SERVER=url, KILN_TOKEN=token, XDG_CONFIG_HOME="/nonexistent",
               XDG_STATE_HOME="/nonexistent")
    env.pop("KILN_CA_FILE", None)
    if ca:
        env["KILN_CA_FILE"] = ca
    return env


def test_https_server_with_a_private_ca(https_server):
    srv, url, ca, d = https_server
    work = os.path.join(d, "work")
    os.makedirs(work)
    with open(os.path.join(work, "data.txt"), "wb") as f:
        f.write(os.urandom(200000))
    env = cli_env(url, srv.admin, ca)

    p = kiln("secret", "set", "TLS_SECRET", input=b"a-secret-value\n", env=env)
    assert p.returncode == 0, p.stderr
    p = kiln("run", "--detach", "--", "true", cwd=work, env=env)
    assert p.returncode == 0, p.stderr
    jid = int(p.stdout.decode().split()[-1])
    p = kiln("ps", "--json", env=env)
    assert p.returncode == 0, p.stderr
    jobs = json.loads(p.stdout)["jobs"]
    assert [j["id"] for j in jobs if j["id"] == jid] == [jid]
    p = kiln("secret", "ls", "--json", env=env)
    assert p.returncode == 0 and b"TLS_SECRET" in p.stdout, p.stderr


@pytest.mark.parametrize("cmd", [["ps"], ["secret", "ls"]])
def test_https_server_of_an_unknown_ca_is_refused(https_server, cmd):
    srv, url, ca, d = https_server
    p = kiln(*cmd, env=cli_env(url, srv.admin))
    assert p.returncode != 0
    err = p.stderr.decode()
    assert len(err.strip().splitlines()) == 1, err
    assert "Failed to reach the server at '%s'" % url in err and "certificate" in err.lower(), err
