"""How an environment's root is laid out as Lambda's (the spawner's half; kindling.runtimes.layout says what for).

A shell's root is assembled ahead of need with the host's system directories (kindling.sandbox.shell); at "go"
the spec's layout keys are put in, each with a check that it is a path Kindling made (the spawner is root, and
a spec is only ever Kindling's, but nothing else may be bound into an environment):

- ``lang``: the interpreter's install prefix, bound read-only at /var/lang (two mount calls, ~20 µs: binding
  it at "go" keeps one pool of shells for every runtime instead of a pool per interpreter). What is bound is a
  read-only overlay of the prefix that the spawner mounts once at start (``mount_langs``), given the prefix by
  a relative name: /proc/self/mountinfo then says ``overlay / /var/lang ... lowerdir=lang:empty``, where a
  plain bind would show the prefix's host path (``/root/.pyenv/versions/3.12.1``);
- ``system_root``: a custom runtime's minimal system (kindling.runtimes.system_root), bound over /usr (and any
  other system directory it has), read-only: bash as /bin/sh, coreutils, curl, glibc, and no Python;
- ``os``: which /etc/os-release to write ("al2023" or "al2").

Resource limits are set here too, just before the runtime's exec (clones of templates inherit them).
"""

from __future__ import annotations

import os
import resource
import shutil
import sys

from kindling.sandbox import linux

LANG_DIR = "/var/lang"
TASK_ROOT = "/var/task"
RUNTIME_DIR = "/var/runtime"

# What the environment's user database knows: root (who owns the code, as on Lambda), the function's user, and
# nobody (the overflow id: in a template's or zygote's clones, which run in a user namespace where the host's root
# is not mapped, root-owned files show as 65534; see docs/runtimes.md).
PASSWD = ("root:x:0:0:root:/root:/bin/bash\nsbx_user1051:x:{uid}:{gid}::/home/sbx_user1051:/sbin/nologin\n"
          "nobody:x:65534:65534:Kernel Overflow User:/:/sbin/nologin\n")
GROUP = "root:x:0:\nsbx_user1051:x:{gid}:\nnobody:x:65534:\n"

# The Amazon Linux each Lambda runtime is based on, as its /etc/os-release says it (AL2023's and AL2's own text).
# Underneath it is Kindling on the host's system (Debian here): docs/runtimes.md says what differs.
OS_RELEASE = {
    "al2023": ('NAME="Amazon Linux"\nVERSION="2023"\nID="amzn"\nID_LIKE="fedora"\nVERSION_ID="2023"\n'
               'PLATFORM_ID="platform:al2023"\nPRETTY_NAME="Amazon Linux 2023"\nANSI_COLOR="0;33"\n'
               'CPE_NAME="cpe:2.3:o:amazon:amazon_linux:2023"\n'
               'HOME_URL="https://aws.amazon.com/linux/amazon-linux-2023/"\n'
               'DOCUMENTATION_URL="https://docs.aws.amazon.com/linux/"\n'
               'SUPPORT_URL="https://aws.amazon.com/premiumsupport/"\n'
               'BUG_REPORT_URL="https://github.com/amazonlinux/amazon-linux-2023"\nVENDOR_NAME="AWS"\n'
               'VENDOR_URL="https://aws.amazon.com/"\nSUPPORT_END="2029-06-30"\n'),
    "al2": ('NAME="Amazon Linux"\nVERSION="2"\nID="amzn"\nID_LIKE="centos rhel fedora"\nVERSION_ID="2"\n'
            'PRETTY_NAME="Amazon Linux 2"\nANSI_COLOR="0;33"\nCPE_NAME="cpe:2.3:o:amazon:amazon_linux:2"\n'
            'HOME_URL="https://amazonlinux.com/"\nSUPPORT_END="2026-06-30"\n'),
}

# Resource limits every runtime starts with: Lambda's documented quota of 1,024 file descriptors, and what its
# environments report for the stack (8 MB) and locked memory (64 KiB). Deliberately not as Lambda: no core dumps
# (a core would go to the host's handler), and RLIMIT_NPROC unlimited, because it counts every process of the
# sandbox user on the whole host, so 1,024 would let one environment stop every other one from forking; the
# 1,024 processes/threads of an environment are its pids cgroup's limit instead.
INF = resource.RLIM_INFINITY
RLIMITS = {
    resource.RLIMIT_NOFILE: (1024, 1024),
    resource.RLIMIT_STACK: (8 << 20, INF),
    resource.RLIMIT_MEMLOCK: (64 << 10, 64 << 10),
    resource.RLIMIT_CORE: (0, 0),
    resource.RLIMIT_NPROC: (INF, INF),
}
SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin")


class LayoutError(ValueError):
    """A spec names a path Kindling did not make."""


def check(spec: dict, langs: list[str], system_roots: list[str]) -> None:
    """Refuse a spec whose layout keys are not what Kindling made (exact paths, as configured at start)."""
    lang, system, base = spec.get("lang"), spec.get("system_root"), spec.get("os", "al2023")
    if lang is not None and lang not in langs:
        raise LayoutError(f"lang {lang!r} is not an interpreter Kindling found")
    if system is not None and system not in system_roots:
        raise LayoutError(f"system_root {system!r} is not one Kindling made")
    if base not in OS_RELEASE:
        raise LayoutError(f"os {base!r} is not one of {', '.join(OS_RELEASE)}")


def mount_langs(langs: list[str], base: str) -> dict[str, str]:
    """In a mount namespace of the spawner's own (gone with it), a read-only overlay of each interpreter prefix,
    named by a relative path so that its options show no host path; returns prefix → what to bind at /var/lang
    (the prefix itself where overlayfs is not available: then mountinfo shows its path)."""
    if not langs:
        return {}
    try:
        linux.unshare(linux.CLONE_NEWNS)
        linux.mount("none", "/", None, linux.MS_REC | linux.MS_PRIVATE)
        shutil.rmtree(base, ignore_errors=True)
        os.makedirs(base, mode=0o700)
    except OSError as exc:
        print(f"kindling spawner: no overlays of the interpreters ({exc}): environments' mountinfo shows their paths",
              file=sys.stderr)
        return {lang: lang for lang in langs}
    out, here = {}, os.getcwd()
    for i, lang in enumerate(langs):
        d = f"{base}/{i}"
        for sub in ("", "/empty", "/mnt"):  # private, as the whole data dir (the overlay's root is the prefix's)
            os.makedirs(d + sub, mode=0o700, exist_ok=True)
        os.symlink(lang, d + "/lang")
        try:
            os.chdir(d)  # overlayfs keeps (and shows) the lower directories as given: "lang", "empty"
            linux.mount("overlay", d + "/mnt", "overlay", linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV,
                        "lowerdir=lang:empty")
            out[lang] = d + "/mnt"
        except OSError as exc:
            print(f"kindling spawner: no overlay of {lang} ({exc}): environments' mountinfo shows its path",
                  file=sys.stderr)
            out[lang] = lang
        finally:
            os.chdir(here)
    return out


def put_in(root: str, spec: dict, bind: object, lang_mounts: dict[str, str]) -> None:
    """Put a spec's layout into ``root`` (before the pivot); ``bind(src, dst)`` binds read-only."""
    with open(root + "/etc/os-release", "w") as f:
        f.write(OS_RELEASE[spec.get("os", "al2023")])
    if spec.get("lang"):
        bind(lang_mounts.get(spec["lang"], spec["lang"]), root + LANG_DIR)  # type: ignore[operator]
    system = spec.get("system_root")
    if system:
        for d in SYSTEM_DIRS:
            if os.path.isdir(system + d) and not os.path.islink(system + d):
                bind(system + d, root + d)  # type: ignore[operator]


def set_limits() -> None:
    """Lambda's resource limits (while still root: raising a hard limit needs it)."""
    for which, (soft, hard) in RLIMITS.items():
        try:
            resource.setrlimit(which, (soft, hard))
        except ValueError:  # above this host's hard limit (no CAP_SYS_RESOURCE, as in a container): as far as it goes
            _, most = resource.getrlimit(which)
            resource.setrlimit(which, (_min(soft, most), _min(hard, most)))


def _min(a: int, b: int) -> int:
    if a == INF:
        return b
    return a if b == INF else min(a, b)
