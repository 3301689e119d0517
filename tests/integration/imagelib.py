"""Helpers for image tests: OCI layouts, docker save archives and rootfs
tarballs built in Python, and a tree snapshot to compare results exactly."""
import gzip
import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile

from conftest import kiln
from sandboxlib import make_busybox_rootfs


def tar_bytes(entries, gz=False):
    """entries: (name, kind, data/target, mode[, uid]) with kind file|dir|symlink|chr|hardlink."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for e in entries:
            name, kind, data, mode = e[:4]
            ti = tarfile.TarInfo(name)
            ti.mode = mode
            ti.mtime = 1700000000
            ti.uid = e[4] if len(e) > 4 else 0
            ti.gid = ti.uid
            if kind == "file":
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
                continue
            if kind == "dir":
                ti.type = tarfile.DIRTYPE
            elif kind == "symlink":
                ti.type, ti.linkname = tarfile.SYMTYPE, data
            elif kind == "hardlink":
                ti.type, ti.linkname = tarfile.LNKTYPE, data
            elif kind == "chr":
                ti.type, ti.devmajor, ti.devminor = tarfile.CHRTYPE, 1, 3
            t.addfile(ti)
    raw = buf.getvalue()
    return gzip.compress(raw, mtime=0) if gz else raw


def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def write_oci_layout(path, layers, bad_digest_at=None):
    """An OCI image layout directory whose manifest lists layers (bytes) in order."""
    blobs = os.path.join(path, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)

    def put(b):
        d = digest(b)
        with open(os.path.join(blobs, d[7:]), "wb") as f:
            f.write(b)
        return d

    descs = []
    for i, layer in enumerate(layers):
        d = put(layer)
        if bad_digest_at == i:
            with open(os.path.join(blobs, d[7:]), "ab") as f:
                f.write(b"tampered")
        mt = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if layer[:2] == b"\x1f\x8b" else "")
        descs.append({"mediaType": mt, "digest": d, "size": len(layer)})
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": put(config), "size": len(config)},
                           "layers": descs}).encode()
    md = put(manifest)
    with open(os.path.join(path, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(path, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md,
             "size": len(manifest), "platform": {"architecture": "amd64", "os": "linux"}}]}, f)
    return path


def docker_save_tar(layers):
    """A classic `docker save` archive: manifest.json naming <id>/layer.tar files."""
    entries, paths = [], []
    for i, layer in enumerate(layers):
        lid = hashlib.sha256(layer).hexdigest()
        entries.append((lid, "dir", None, 0o755))
        entries.append((lid + "/layer.tar", "file", layer, 0o644))
        paths.append(lid + "/layer.tar")
    manifest = json.dumps([{"Config": "config.json", "RepoTags": ["t:latest"], "Layers": paths}]).encode()
    entries.append(("manifest.json", "file", manifest, 0o644))
    entries.append(("config.json", "file", b"{}", 0o644))
    return tar_bytes(entries)


def dir_to_tar(path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name in sorted(os.listdir(path)):
            t.add(os.path.join(path, name), arcname=name)
    return buf.getvalue()


def snapshot(root):
    """{relative path: (kind, content or target, mode, uid)} of a tree."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("symlink", os.readlink(p), None, st.st_uid)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", None, mode, st.st_uid)
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    out[rel] = ("file", f.read(), mode, st.st_uid)
            else:
                out[rel] = ("other", None, mode, st.st_uid)
    return out


def show(data, name):
    p = kiln("image", "show", name, "--data", data, "--json", check=True)
    return json.loads(p.stdout)


def rootfs_path(data, name, rev=None):
    p = kiln("image", "path", name + ("@%d" % rev if rev else ""), "--data", data, check=True)
    return p.stdout.decode().strip()


def file_digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def busybox_tar(tmp, tag):
    """A busybox rootfs tarball whose /etc/rev says tag."""
    root = make_busybox_rootfs(os.path.join(tmp, "bb-" + tag))
    with open(os.path.join(root, "etc", "rev"), "w") as f:
        f.write(tag + "\n")
    path = os.path.join(tmp, "bb-%s.tar" % tag)
    subprocess.run(["tar", "-C", root, "-cf", path, "."], check=True)
    return path
