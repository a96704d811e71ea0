"""Where container images come from: an ImageUri mapped to an OCI registry or an OCI layout on disk.

The operator names sources with ``--image-source`` (``KINDLING_IMAGE_SOURCES``): comma-separated
``PREFIX=SOURCE`` pairs. An ImageUri ``PREFIX/REPOSITORY[:TAG|@sha256:DIGEST]`` is then read from
``SOURCE``: ``http://host:port`` or ``https://host:port`` (an OCI registry: the same REPOSITORY and
tag there) or ``oci:/dir`` (``/dir/REPOSITORY`` is an OCI image layout, TAG its reference name). PREFIX
is a registry host (``123456789012.dkr.ecr.us-east-1.amazonaws.com``), a host with leading repository
path, or ``*`` for any host. Without a match the image is refused as AWS refuses an ImageUri it cannot
read.
"""

from __future__ import annotations

import dataclasses
import re

from kindling import errors

REPOSITORY = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
HOST = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]{1,5})?")
DIGEST = re.compile(r"sha256:[a-f0-9]{64}")


@dataclasses.dataclass(frozen=True)
class ImageRef:
    uri: str  # as the client gave it
    host: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def repository_uri(self) -> str:
        """The URI without tag or digest (ResolvedImageUri is this @sha256:...)."""
        return f"{self.host}/{self.repository}"


def parse(uri: str) -> ImageRef:
    """An ImageUri's parts, or AWS's error for one that is not an image URI."""
    invalid = errors.InvalidParameterValueException(f"Source image {uri} is not valid. Provide a valid source image.")
    if not isinstance(uri, str) or len(uri) > 1024 or "/" not in uri:
        raise invalid
    host, rest = uri.split("/", 1)
    digest = tag = None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not DIGEST.fullmatch(digest):
            raise invalid
    elif ":" in rest.rsplit("/", 1)[-1]:
        rest, tag = rest.rsplit(":", 1)
        if not TAG.fullmatch(tag):
            raise invalid
    else:
        tag = "latest"
    if not HOST.fullmatch(host) or not REPOSITORY.fullmatch(rest):
        raise invalid
    return ImageRef(uri, host, rest, tag, digest)


@dataclasses.dataclass(frozen=True)
class Source:
    """How skopeo reads one image: its transport reference, and whether TLS is required."""

    reference: str
    tls_verify: bool = True

    def pinned(self, digest: str) -> Source:
        """The same image by its digest (registries; a layout is read by its tag)."""
        if self.reference.startswith("docker://"):
            base = self.reference.split("@", 1)[0]
            name, _, last = base.rpartition("/")
            return Source(f"{name}/{last.split(':', 1)[0]}@{digest}", self.tls_verify)
        return self


class Sources:
    def __init__(self, setting: str) -> None:
        self.rules: list[tuple[str, str]] = []
        for item in filter(None, (s.strip() for s in setting.split(","))):
            prefix, sep, target = item.partition("=")
            if not sep or not prefix or not target.startswith(("http://", "https://", "oci:/")):
                raise ValueError(f"--image-source: {item!r} is not PREFIX=http(s)://host:port or PREFIX=oci:/dir")
            self.rules.append((prefix.rstrip("/"), target.rstrip("/")))
        self.rules.sort(key=lambda r: -len(r[0]))  # the longest prefix wins

    def __bool__(self) -> bool:
        return bool(self.rules)

    def source(self, ref: ImageRef) -> Source:
        path = f"{ref.host}/{ref.repository}"
        for prefix, target in self.rules:
            if prefix == "*":
                rest = ref.repository
            elif path.startswith(prefix + "/"):
                rest = path[len(prefix) + 1:]
            else:
                continue
            if target.startswith("oci:"):
                if ref.tag is None:
                    break  # a layout on disk is read by tag
                return Source(f"{target}/{rest}:{ref.tag}")
            host = target.split("://", 1)[1]
            at = f"@{ref.digest}" if ref.digest else f":{ref.tag}"
            return Source(f"docker://{host}/{rest}{at}", tls_verify=target.startswith("https://"))
        raise errors.InvalidParameterValueException(
            f"Source image {ref.uri} is not valid. Provide a valid source image. (Kindling reads images from the "
            "registries and layouts named by --image-source.)")
