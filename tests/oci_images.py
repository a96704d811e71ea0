"""Build OCI images for tests without Docker: tar layers, a config and a manifest written as an OCI layout.

``layer({...})`` makes a layer from entries (path -> bytes for a file, or a tarfile.TarInfo for anything
else); ``write_layout(dir, tag, layers, config)`` writes ``dir`` as an OCI image layout (skopeo's ``oci:``
transport reads it) and returns the manifest digest. ``busybox_image`` is a complete Lambda image: a static
busybox and a shell bootstrap that speaks the Runtime API with ``busybox wget`` and answers with what its
environment looks like.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "wget", "sed", "tr", "grep", "cat", "id", "touch", "stat", "awk")

# Answers each event with its handler, argv, cwd, uid, some variables and what it can see and write.
BOOTSTRAP = r"""#!/bin/sh
API="http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime"
while true; do
  HEAD=$(wget -S -O /tmp/event "$API/invocation/next" 2>&1)
  ID=$(echo "$HEAD" | grep -i 'lambda-runtime-aws-request-id' | sed 's/.*: *//' | tr -d '\r ')
  BODY="{\"handler\":\"$_HANDLER\",\"argv\":\"$0 $*\",\"cwd\":\"$(pwd)\",\"uid\":\"$(id -u)\","
  BODY="$BODY\"image_var\":\"$IMAGE_VAR\",\"shared\":\"$SHARED\",\"task_root\":\"$LAMBDA_TASK_ROOT\","
  BODY="$BODY\"region\":\"$AWS_REGION\",\"path\":\"$PATH\",\"event\":$(cat /tmp/event),"
  W=no; touch /app/probe 2>/dev/null && W=yes
  T=no; touch /tmp/probe 2>/dev/null && T=yes
  O=no; [ -e /app/old.txt ] && O=yes
  S=no; [ -u /app/suid ] && S=yes
  BODY="$BODY\"root_writable\":\"$W\",\"tmp_writable\":\"$T\",\"old\":\"$O\",\"setuid\":\"$S\","
  BODY="$BODY\"tmp_mode\":\"$(stat -c %a /tmp)\",\"resolv\":\"$(stat -c %F /etc/resolv.conf)\","
  BODY="$BODY\"root_mount\":\"$(awk '$5 == "/" {print $4}' /proc/self/mountinfo)\"}"
  wget -q -O /dev/null --post-data "$BODY" "$API/invocation/$ID/response"
done
"""


def info(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, linkname: str = "", size: int = 0,
         devmajor: int = 0, devminor: int = 0) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.linkname, ti.size = kind, mode, linkname, size
    ti.devmajor, ti.devminor = devmajor, devminor
    return ti


def layer(entries: dict[str, bytes | tarfile.TarInfo], modes: dict[str, int] | None = None,
          compress: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in entries.items():
            if isinstance(content, tarfile.TarInfo):
                tar.addfile(content)
            else:
                ti = info(name, mode=(modes or {}).get(name, 0o644), size=len(content))
                tar.addfile(ti, io.BytesIO(content))
    raw = buf.getvalue()
    return gzip.compress(raw, mtime=0) if compress else raw


def _blob(root: Path, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def write_layout(root: Path, tag: str, layers: list[bytes], config: dict[str, Any] | bytes,
                 layer_type: str = "application/vnd.oci.image.layer.v1.tar+gzip",
                 manifest_extra: dict[str, Any] | None = None) -> str:
    """Write (or add to) an OCI layout at ``root``; returns the manifest's hex digest."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    if isinstance(config, dict):
        diff_ids = ["sha256:" + hashlib.sha256(gzip.decompress(b) if b[:2] == b"\x1f\x8b" else b).hexdigest()
                    for b in layers]
        config = json.dumps({"architecture": "amd64", "os": "linux", "config": config,
                             "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **_blob(root, config)},
                "layers": [{"mediaType": layer_type, **_blob(root, b)} for b in layers], **(manifest_extra or {})}
    raw = json.dumps(manifest).encode()
    desc = {"mediaType": manifest["mediaType"], **_blob(root, raw),
            "annotations": {"org.opencontainers.image.ref.name": tag}}
    index_path = root / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {"schemaVersion": 2, "manifests": []}
    index["manifests"] = [m for m in index["manifests"]
                          if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag] + [desc]
    index_path.write_text(json.dumps(index))
    return desc["digest"][7:]


def index_layout(root: Path, tag: str, manifests: list[dict[str, Any]]) -> str:
    """Point ``tag`` of the layout at ``root`` to an image index of ``manifests`` (descriptors with platform);
    returns the index's hex digest."""
    raw = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                      "manifests": manifests}).encode()
    desc = {"mediaType": "application/vnd.oci.image.index.v1+json", **_blob(root, raw),
            "annotations": {"org.opencontainers.image.ref.name": tag}}
    index_path = root / "index.json"
    index = json.loads(index_path.read_text())
    index["manifests"] = [m for m in index["manifests"]
                          if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag] + [desc]
    index_path.write_text(json.dumps(index))
    return desc["digest"][7:]


def busybox_layer() -> bytes:
    entries: dict[str, bytes | tarfile.TarInfo] = {"bin/": info("bin", tarfile.DIRTYPE, 0o755),
                                                   "bin/busybox": Path(BUSYBOX).read_bytes()}
    for applet in APPLETS:
        entries[f"bin/{applet}"] = info(f"bin/{applet}", tarfile.SYMTYPE, 0o777, linkname="busybox")
    return layer(entries, modes={"bin/busybox": 0o755})


def busybox_image(root: Path, tag: str = "latest", extra_layers: list[bytes] | None = None,
                  config: dict[str, Any] | None = None) -> str:
    """A Lambda image: busybox, /app/bootstrap.sh, a file a later layer whites out; returns its digest."""
    app = layer({"app/": info("app", tarfile.DIRTYPE, 0o755), "app/bootstrap.sh": BOOTSTRAP.encode(),
                 "app/old.txt": b"whited out by the next layer"}, modes={"app/bootstrap.sh": 0o755})
    whiteout = layer({"app/.wh.old.txt": b""})
    settings = {"Entrypoint": ["/bin/sh", "/app/bootstrap.sh"], "Cmd": ["handler.main", "extra-arg"],
                "Env": ["PATH=/bin", "IMAGE_VAR=from-image", "SHARED=image"], "WorkingDir": "/app"}
    settings.update(config or {})
    return write_layout(root, tag, [busybox_layer(), app, whiteout, *(extra_layers or [])], settings)


def copy_layout(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, dirs_exist_ok=True)
    os.sync()
