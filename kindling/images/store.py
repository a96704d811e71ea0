"""Container images on this host: resolved to a digest, pulled and unpacked once per digest, shared.

``code/.images/<hex>/`` in the data dir (on the code store's own filesystem) holds one image, named by its
manifest digest (the function's CodeSha256): ``rootfs/`` (its layers unpacked, read-only to environments)
and ``config.json`` (Entrypoint, Cmd, Env, WorkingDir). Every function and version using that digest runs on
the same tree. Resolving a tag to a digest is quick and happens in the request (an image that does not
exist is refused at once, as on AWS); pulling and unpacking runs in a worker process
(kindling.images.pull), one per digest at a time.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from kindling import errors
from kindling.images.sources import DIGEST, ImageRef, Source, Sources, parse

log = logging.getLogger("kindling.images")

INSPECT_TIMEOUT = 30.0
INSPECTS_AT_ONCE = 4  # skopeo processes resolving tags; more requests wait (a flood of creates costs no more)
PULLS_AT_ONCE = 2  # pull-and-unpack workers; more digests wait their turn
MAX_MANIFEST = 4 << 20
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
ARCH = {"x86_64": "amd64", "arm64": "arm64"}
KEY_PREFIX = "image:"


def code_key(hex_digest: str, uri: str) -> str:
    """A version's code key for an image: its digest and the ImageUri it was given as."""
    return f"{KEY_PREFIX}{hex_digest}:{uri}"


def is_image_key(key: str) -> bool:
    return key.startswith(KEY_PREFIX)


def split_key(key: str) -> tuple[str, str]:
    """(hex digest, ImageUri) of an image code key."""
    hex_digest, _, uri = key[len(KEY_PREFIX):].partition(":")
    return hex_digest, uri


class PullFailed(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class ImageStore:
    def __init__(self, roots: Path, sources: str, max_mb: int, pull_timeout: float) -> None:
        self.roots = roots  # on the code store's filesystem (kindling.store.code_volume): no host path in mountinfo
        self.roots.mkdir(mode=0o700, exist_ok=True)
        self.sources = Sources(sources)
        self.max_bytes = max_mb << 20
        self.pull_timeout = pull_timeout
        self.pulls: dict[str, asyncio.Task[None]] = {}
        self.failures: dict[str, PullFailed] = {}  # the last pull of a digest failed (tried again on the next use)
        self._removing: set[Path] = set()
        self.held: set[str] = set()  # pulled for a version that does not refer to it yet: not garbage
        self._inspecting = asyncio.Semaphore(INSPECTS_AT_ONCE)
        self._pulling = asyncio.Semaphore(PULLS_AT_ONCE)

    def root(self, hex_digest: str) -> Path:
        return self.roots / hex_digest

    def ready(self, hex_digest: str) -> bool:
        return (self.root(hex_digest) / "config.json").is_file()

    def settings(self, hex_digest: str) -> dict[str, Any]:
        with open(self.root(hex_digest) / "config.json") as f:
            doc: dict[str, Any] = json.load(f)
        return doc

    # -- resolving: ImageUri -> digest ------------------------------------------------------------------
    async def resolve(self, uri: str, architecture: str) -> tuple[str, Source]:
        """The manifest digest (hex) an ImageUri names now, and how to pull exactly that image."""
        ref = parse(uri)
        source = self.sources.source(ref)
        raw = await self._inspect(ref, source)
        try:
            doc = json.loads(raw)
        except ValueError:
            raise errors.InvalidParameterValueException(
                f"Source image {uri} is not valid. Provide a valid source image.") from None
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        if ref.digest is not None and ref.digest != digest:
            raise errors.InvalidParameterValueException(
                f"Source image {uri} does not exist. Provide a valid source image.")
        if isinstance(doc, dict) and doc.get("mediaType") in INDEX_TYPES:
            digest = _platform_digest(doc, ARCH.get(architecture, "amd64"), uri)
        return digest[7:], source.pinned(digest)

    async def _inspect(self, ref: ImageRef, source: Source) -> bytes:
        argv = ["skopeo", "inspect", "--raw", "--retry-times", "0"]
        if not source.tls_verify:
            argv.append("--tls-verify=false")
        argv.append(source.reference)
        async with self._inspecting:
            proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                        stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.PIPE)
            try:
                out, err = await asyncio.wait_for(proc.communicate(), INSPECT_TIMEOUT)
            except BaseException as exc:
                proc.kill()
                await proc.wait()
                if isinstance(exc, TimeoutError):
                    raise errors.InvalidParameterValueException(
                        f"Source image {ref.uri} does not exist. Provide a valid source image.") from None
                raise
        text = err.decode(errors="replace")
        if proc.returncode != 0:
            if any(s in text.lower() for s in ("unauthorized", "denied", "403")):
                raise errors.InvalidParameterValueException(
                    "Lambda does not have permission to access the ECR image. Check the ECR permissions.")
            log.info("image %s could not be resolved: %s", ref.uri, text.strip()[-300:])
            raise errors.InvalidParameterValueException(
                f"Source image {ref.uri} does not exist. Provide a valid source image.")
        if len(out) > MAX_MANIFEST:
            raise errors.InvalidParameterValueException(
                f"Source image {ref.uri} is not valid. Provide a valid source image.")
        return out

    def source(self, uri: str, hex_digest: str) -> Source:
        """How to pull the image ``uri`` resolved to before (by digest from a registry; by tag from a layout,
        the pull checking it still names that digest)."""
        return self.sources.source(parse(uri)).pinned(f"sha256:{hex_digest}")

    # -- pulling: digest -> unpacked root ---------------------------------------------------------------
    def pull(self, hex_digest: str, source: Source, architecture: str) -> asyncio.Task[None]:
        """The pull of ``hex_digest`` (one at a time per digest; done at once when it is already here)."""
        self.held.add(hex_digest)  # until the caller's version refers to it (release)
        task = self.pulls.get(hex_digest)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._pull(hex_digest, source, architecture))
            self.pulls[hex_digest] = task
            task.add_done_callback(lambda _: self.pulls.pop(hex_digest, None))
        return task

    async def _pull(self, hex_digest: str, source: Source, architecture: str) -> None:
        async with self._pulling:
            await self._pull_now(hex_digest, source, architecture)

    async def _pull_now(self, hex_digest: str, source: Source, architecture: str) -> None:
        if self.ready(hex_digest):
            return
        request = {"source": source.reference, "tls_verify": source.tls_verify, "dest": str(self.root(hex_digest)),
                   "max_bytes": self.max_bytes, "arch": ARCH.get(architecture, "amd64"), "timeout": self.pull_timeout,
                   "expect": None if "@sha256:" in source.reference else f"sha256:{hex_digest}"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kindling.images.pull", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(json.dumps(request).encode()),
                                              self.pull_timeout + 60)
        except BaseException:
            proc.kill()
            await proc.wait()
            raise
        try:
            answer = json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            log.warning("image pull of sha256:%s failed: %s", hex_digest, err.decode(errors="replace")[-500:])
            answer = {"ok": False, "code": "InvalidImage", "reason": "the image could not be unpacked"}
        if not answer.get("ok"):
            failure = PullFailed(answer.get("code", "InvalidImage"), answer.get("reason", ""))
            self.failures[hex_digest] = failure
            log.info("image sha256:%s is not usable (%s): %s", hex_digest, failure.code, failure.reason)
            raise failure
        self.failures.pop(hex_digest, None)

    def release(self, hex_digest: str) -> None:
        self.held.discard(hex_digest)

    # -- garbage ----------------------------------------------------------------------------------------
    def collect(self, in_use: set[str]) -> None:
        """Remove unpacked images no version uses (and leftovers of pulls that were cut off)."""
        gone = []
        for entry in os.listdir(self.roots):
            digest = entry.split(".", 1)[0]
            if digest in self.pulls or (entry == digest and (digest in in_use or digest in self.held)):
                continue  # (a pull's temporary folder with no pull of ours in flight is a cut-off one's)
            path = self.roots / entry
            if path in self._removing:
                continue
            if ".gone-" not in entry:  # out of the way at once (a later pull of it starts afresh), removed later
                path = path.with_name(f"{digest}.gone-{os.urandom(4).hex()}")
                try:
                    os.rename(self.roots / entry, path)
                except FileNotFoundError:
                    continue
            gone.append(path)
        if not gone:
            return
        self._removing.update(gone)
        try:
            done = asyncio.get_running_loop().run_in_executor(None, _remove, gone)
            done.add_done_callback(lambda _: self._removing.difference_update(gone))
        except RuntimeError:  # no event loop: a direct caller
            _remove(gone)
            self._removing.difference_update(gone)


def _remove(paths: list[Path]) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def _platform_digest(index: dict[str, Any], arch: str, uri: str) -> str:
    for m in index.get("manifests") or []:
        if not isinstance(m, dict):
            continue
        platform = m.get("platform") or {}
        if platform.get("os", "linux") == "linux" and platform.get("architecture") == arch:
            digest = m.get("digest")
            if isinstance(digest, str) and DIGEST.fullmatch(digest):  # it names folders: nothing but hex
                return digest
    raise errors.InvalidParameterValueException(
        f"The image manifest, config or layer media type for the source image {uri} is not supported.")
