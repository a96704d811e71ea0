"""The AWS SDK for Python (boto3, botocore and their dependencies) that Python runtimes carry, as Lambda's do.

The pinned sets live in pyproject.toml (``[tool.kindling.runtime-sdk]``: one set per range of Python versions).
``python -m kindling.runtimes.sdk`` (run by ``make``) installs each set once with pip into its own tree under
kindling/runtimes/python/sdk/ -- the runtime directory every environment sees read-only at /var/runtime -- and
links ``sdk/python3.X`` to the tree for that interpreter, then compiles each tree's bytecode for the interpreters
found (environments cannot write it). Nothing is downloaded at serve time: ``kindling serve`` only compiles what an
interpreter found since lacks, and warns when a tree is missing. The runtime's bootstrap puts
/var/runtime/sdk/python3.X on sys.path after /var/task and /var/runtime, so a function's own boto3 wins; nothing of
it is imported unless the function imports it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

log = logging.getLogger("kindling.runtimes")

SDK_DIR = Path(__file__).parent / "python" / "sdk"
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
MINORS = range(9, 15)  # python3.9 .. python3.14
MARKER = ".kindling-sdk.json"  # written last: a tree without it is incomplete


def pins(pyproject: Path = PYPROJECT) -> dict[str, list[str]]:
    """{"python3.10+": ["boto3==1.44.8", ...], "python3.9": [...]} from pyproject.toml."""
    with open(pyproject, "rb") as f:
        table = tomllib.load(f)["tool"]["kindling"]["runtime-sdk"]
    return {str(k): [str(p) for p in v] for k, v in table.items()}


def minors(key: str) -> list[int]:
    """The minor versions a set is for: "python3.9" -> [9]; "python3.10+" -> [10, 11, ...]."""
    version = key.removeprefix("python3.")
    if version.endswith("+"):
        return [m for m in MINORS if m >= int(version[:-1])]
    return [int(version)]


def tree_name(packages: list[str]) -> str:
    """A tree is named for its boto3 release: sdk/boto3-1.44.8."""
    boto3 = next(p for p in packages if p.startswith("boto3=="))
    return boto3.replace("==", "-")


def install(sets: dict[str, list[str]] | None = None, sdk_dir: Path = SDK_DIR) -> None:
    """Install every pinned set that is not already there (with pip: needs the package index), and link
    sdk/python3.X to the tree for each interpreter version."""
    sets = pins() if sets is None else sets
    sdk_dir.mkdir(parents=True, exist_ok=True)
    for key, packages in sets.items():
        tree = sdk_dir / tree_name(packages)
        if _installed(tree) != packages:
            tmp = sdk_dir / f".{tree.name}.{os.getpid()}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            minor = minors(key)[0]
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                            "--target", str(tmp), "--no-deps", "--no-compile", "--only-binary=:all:",
                            "--python-version", f"3.{minor}", *packages], check=True)
            shutil.rmtree(tmp / "bin", ignore_errors=True)  # console scripts: not part of Lambda's runtime
            (tmp / MARKER).write_text(json.dumps({"packages": packages}))
            shutil.rmtree(tree, ignore_errors=True)
            tmp.rename(tree)
        for m in minors(key):
            link = sdk_dir / f"python3.{m}"
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(tree.name)  # relative: the same inside environments (/var/runtime/sdk)
        print(f"runtime SDK for {key}: {', '.join(packages)} in {tree}")


def _installed(tree: Path) -> list[str] | None:
    try:
        return list(json.loads((tree / MARKER).read_text())["packages"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def precompile(interpreters: dict[str, str], sdk_dir: Path = SDK_DIR) -> None:
    """Compile each interpreter's bytecode for its SDK tree, once (environments see the tree read-only and would
    otherwise compile botocore on every cold start that imports it). ``interpreters``: {"python3.12": path}."""
    missing = []
    for runtime, interpreter in interpreters.items():
        link = sdk_dir / runtime
        if not (link / MARKER).exists():
            missing.append(runtime)
            continue
        tag = "cpython-" + runtime.removeprefix("python").replace(".", "")
        done = link / f".compiled-{tag}"
        if done.exists():
            continue
        try:
            result = subprocess.run([interpreter, "-s", "-m", "compileall", "-q", "-j", "0", str(link.resolve())],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:  # imports still work, only slower: start anyway
            log.warning("could not compile the AWS SDK for %s (%s); imports of it will compile on every cold start",
                        runtime, exc)
            continue
        if result.returncode == 0:
            done.touch()
    if missing:
        log.warning("The AWS SDK for Python (boto3) is not installed for %s: functions on those runtimes can import "
                    "it only from their own code. Install it with `make` (or `python -m kindling.runtimes.sdk`).",
                    ", ".join(missing))


if __name__ == "__main__":
    install()
    from kindling.runtimes.registry import Runtimes

    Runtimes().precompile()  # now, so that the first `kindling serve` does not wait for it
