"""Pull one image and unpack it: ``python -m kindling.images.pull`` (a worker process, off the event loop).

Reads a JSON request on stdin ({"source", "tls_verify", "dest", "max_bytes", "arch", "timeout"}), copies
the image with skopeo (Debian's package: it speaks the registry protocol, checks every blob's digest and
picks the platform of a multi-platform index; see docs/runtimes-images.md for why skopeo and not a Python
OCI library) into a temporary OCI layout next to ``dest``, reads its manifest and configuration strictly,
unpacks the layers (kindling.images.unpack) into ``dest``.tmp/rootfs, and renames that to ``dest``.
Answers one JSON line: {"ok": true} or {"ok": false, "code": "InvalidImage" | "ImageAccessDenied", "reason"}.

Whatever goes wrong, nothing is left but ``dest`` complete or not at all. The worker's own memory is
capped once skopeo has run (a layer's tar headers cannot make it grow past the cap), skopeo's files are
capped at the image limit, and the whole pull at ``timeout`` seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
from typing import Any

from kindling.images.unpack import Budget, InvalidImage, Root, apply_layer, finish, open_layer

DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
MAX_JSON = 4 << 20
MAX_LAYERS = 256
MAX_SETTINGS = 16384  # Entrypoint + Cmd + Env, as JSON: they travel in the spawner's messages (64 KB each)
WORKER_MEMORY = 1 << 30
LAYER_TYPES = ("application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip",
               "application/vnd.docker.image.rootfs.diff.tar.gzip", "application/vnd.docker.image.rootfs.diff.tar")
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json")


class AccessDenied(Exception):
    pass


def _json(path: str) -> Any:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_JSON + 1)
    except FileNotFoundError:
        raise InvalidImage("the image refers to a blob that is missing") from None
    if len(data) > MAX_JSON:
        raise InvalidImage("the image's manifest or configuration is too large")
    try:
        return json.loads(data)
    except ValueError:
        raise InvalidImage("the image's manifest or configuration is not valid JSON") from None


def _blob(layout: str, digest: Any) -> str:
    if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
        raise InvalidImage("the image has a descriptor without a valid sha256 digest")
    return os.path.join(layout, "blobs", "sha256", digest[7:])


def _check_digest(path: str, digest: str) -> None:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except FileNotFoundError:
        raise InvalidImage("the image refers to a blob that is missing") from None
    if "sha256:" + h.hexdigest() != digest:
        raise InvalidImage("a blob of the image does not match its digest")


def _strings(value: Any, what: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or len(value) > 1500:
        raise InvalidImage(f"the image configuration's {what} is not a list of strings")
    return value


def image_config(doc: Any) -> dict[str, Any]:
    """Entrypoint, Cmd, Env and WorkingDir of an OCI image configuration, checked."""
    if not isinstance(doc, dict) or not isinstance(doc.get("config", {}), dict):
        raise InvalidImage("the image configuration is malformed")
    c = doc.get("config") or {}
    env = _strings(c.get("Env"), "Env") or []
    if any("=" not in e for e in env):
        raise InvalidImage("the image configuration's Env has an entry without '='")
    workdir = c.get("WorkingDir") or ""
    if not isinstance(workdir, str) or len(workdir) > 1000:
        raise InvalidImage("the image configuration's WorkingDir is malformed")
    settings = {"Entrypoint": _strings(c.get("Entrypoint"), "Entrypoint") or [],
                "Cmd": _strings(c.get("Cmd"), "Cmd") or [], "Env": env, "WorkingDir": workdir}
    if len(json.dumps(settings)) > MAX_SETTINGS:
        raise InvalidImage(f"the image configuration's Entrypoint, Cmd and Env are larger than {MAX_SETTINGS} bytes")
    return settings


def _copy(req: dict[str, Any], layout: str) -> None:
    argv = ["skopeo", "--override-os", "linux", "--override-arch", req.get("arch", "amd64"), "copy", "--quiet",
            "--retry-times", "0"]
    if not req.get("tls_verify", True):
        argv.append("--src-tls-verify=false")
    argv += [req["source"], f"oci:{layout}:image"]
    limit = int(req["max_bytes"]) + (1 << 20)

    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # no blob larger than the image limit
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=float(req["timeout"]),
                              preexec_fn=limits)
    except subprocess.TimeoutExpired:
        raise InvalidImage("the image could not be read in time") from None
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()
        text = why[-1] if why else f"skopeo exited with {done.returncode}"
        if re.search(r"unauthorized|denied|\b40[13]\b", text, re.I):
            raise AccessDenied(text[-300:])
        if re.search(r"file too large|file size limit", text, re.I) or done.returncode == -25:  # RLIMIT_FSIZE
            raise InvalidImage(f"the image is larger than {int(req['max_bytes']) >> 20} MB")
        if re.search(r"no such file|blob unknown|manifest unknown|not found", text, re.I):
            raise InvalidImage("the image refers to a blob that is missing")
        message = re.search(r'msg="(.*)"', text)
        text = re.sub(r"/[^\s:\"]+", "...", message.group(1) if message else text)  # no host paths in reasons
        raise InvalidImage(f"the image could not be read: {text[-300:]}")


def pull(req: dict[str, Any]) -> None:
    dest = req["dest"]
    tmp = f"{dest}.tmp-{os.getpid()}"
    layout, rootfs = os.path.join(tmp, "layout"), os.path.join(tmp, "rootfs")
    os.makedirs(tmp, mode=0o700)
    try:
        _copy(req, layout)
        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY, WORKER_MEMORY))
        index = _json(os.path.join(layout, "index.json"))
        manifests = index.get("manifests") if isinstance(index, dict) else None
        if not isinstance(manifests, list) or len(manifests) != 1 or not isinstance(manifests[0], dict):
            raise InvalidImage("the image layout's index is malformed")
        if req.get("expect") and manifests[0].get("digest") != req["expect"]:
            raise InvalidImage("the image's tag names another image now")
        manifest = _json(_blob(layout, manifests[0].get("digest")))
        if not isinstance(manifest, dict) or manifest.get("mediaType", MANIFEST_TYPES[0]) not in MANIFEST_TYPES:
            raise InvalidImage("the image manifest is not an image manifest")
        layers, config = manifest.get("layers"), manifest.get("config")
        if not isinstance(layers, list) or not isinstance(config, dict) or len(layers) > MAX_LAYERS:
            raise InvalidImage("the image manifest is malformed")
        config_path = _blob(layout, config.get("digest"))
        _check_digest(config_path, config["digest"])
        settings = image_config(_json(config_path))
        os.mkdir(rootfs, 0o755)
        os.chmod(rootfs, 0o755)
        budget = Budget(int(req["max_bytes"]))
        root = Root(rootfs)
        try:
            for layer in layers:
                if not isinstance(layer, dict) or layer.get("mediaType") not in LAYER_TYPES:
                    raise InvalidImage(f"the image has a layer of an unsupported type "
                                       f"({str(layer.get('mediaType') if isinstance(layer, dict) else '')[:100]})")
                path = _blob(layout, layer.get("digest"))
                _check_digest(path, layer["digest"])
                stream = open_layer(path, budget)
                try:
                    apply_layer(root, stream, budget)
                finally:
                    stream.raw.close()  # type: ignore[attr-defined]
            finish(root)
        finally:
            root.close()
        shutil.rmtree(layout)
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(settings, f)
        try:
            os.rename(tmp, dest)
        except OSError:  # another pull of the same digest got there first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def main() -> None:
    os.umask(0o022)
    req = json.loads(sys.stdin.read(1 << 16))
    try:
        pull(req)
        answer: dict[str, Any] = {"ok": True}
    except AccessDenied as exc:
        answer = {"ok": False, "code": "ImageAccessDenied", "reason": str(exc)}
    except InvalidImage as exc:
        answer = {"ok": False, "code": "InvalidImage", "reason": str(exc)}
    except MemoryError:
        answer = {"ok": False, "code": "InvalidImage", "reason": "unpacking the image took too much memory"}
    except OSError as exc:
        answer = {"ok": False, "code": "InvalidImage", "reason": f"the image could not be unpacked ({exc.strerror})"}
    except Exception as exc:  # noqa: BLE001 - whatever hostile input found: that image fails, with the reason
        answer = {"ok": False, "code": "InvalidImage",
                  "reason": f"the image could not be unpacked ({type(exc).__name__})"}
    sys.stdout.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
