"""Which instruction set architectures (Lambda's ``Architectures``) this host can run.

The host's own architecture always runs natively. Another one is never run as if it were the host's: it is
refused at CreateFunction / UpdateFunctionCode, except for the ``provided`` runtimes (whose bootstrap and
binaries the function brings itself) when the kernel runs that architecture's executables through qemu-user
(a binfmt_misc entry, e.g. Debian's qemu-user-binfmt). The managed runtimes use the host's interpreters, which
are of the host's architecture, so for them only the host's architecture is accepted.
"""

from __future__ import annotations

import platform
from pathlib import Path

from kindling import errors
from kindling.runtimes.registry import PROVIDED

BINFMT = Path("/proc/sys/fs/binfmt_misc")
_LAMBDA_NAME = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}
_QEMU = {"x86_64": "qemu-x86_64", "arm64": "qemu-aarch64"}


def host() -> str:
    """The host's architecture in Lambda's words (x86_64 or arm64), or the machine name if neither."""
    machine = platform.machine().lower()
    return _LAMBDA_NAME.get(machine, machine)


def emulated(arch: str, binfmt: Path = BINFMT) -> bool:
    """Whether the kernel runs ``arch`` executables through qemu-user (an enabled binfmt_misc entry)."""
    entry = binfmt / _QEMU.get(arch, "-")
    try:
        return entry.read_text().splitlines()[0].strip() == "enabled"
    except (OSError, IndexError):
        return False


def check(architectures: list[str] | None, runtime: str | None, binfmt: Path = BINFMT) -> None:
    """Refuse an architecture this host would not run, with InvalidParameterValueException."""
    here = host()
    for arch in architectures or []:
        if arch == here or (runtime in PROVIDED and emulated(arch, binfmt)):
            continue
        how = (f"this host has no qemu-user binfmt_misc entry for {arch}" if runtime in PROVIDED else
               f"{runtime or 'this runtime'} runs on the host's own {here} interpreter")
        raise errors.InvalidParameterValueException(
            f"Architectures [{arch}] is not supported on this Kindling host: the host is {here}, so the function "
            f"would not run here ({how}). Use Architectures [{here}].")
