"""The AWS SDK for JavaScript v3 that Node.js runtimes carry, as Lambda's do, at /var/runtime/node_modules.

The pinned set is ``sdk/package.json`` and its ``package-lock.json`` here (a subset of the full @aws-sdk set Lambda
ships: the clients most functions use; docs/runtimes-node.md). ``python -m kindling.runtimes.node.sdk`` (run by
``make``) installs it once with ``npm ci --ignore-scripts`` and moves the tree to ``node_modules`` in the runtime
directory (kindling/runtimes/python, which environments see read-only at /var/runtime); the runtime client puts
that on NODE_PATH after the function's own code and layers, so a function's own SDK wins. Nothing is downloaded at
serve time; without npm (or the registry) the runtimes run without the SDK and the docs say so.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

log = logging.getLogger("kindling.runtimes")

PINS = Path(__file__).parent / "sdk"
RUNTIME_DIR = Path(__file__).parents[1] / "python"
MARKER = ".kindling-sdk"  # written last, with the lock file's digest: a tree without it is incomplete


def _digest() -> str:
    return hashlib.sha256((PINS / "package-lock.json").read_bytes()).hexdigest()


def installed(runtime_dir: Path = RUNTIME_DIR) -> bool:
    try:
        return (runtime_dir / "node_modules" / MARKER).read_text() == _digest()
    except OSError:
        return False


def install(runtime_dir: Path = RUNTIME_DIR) -> bool:
    """Install the pinned SDK unless it is there; False (with the reason logged) if npm cannot."""
    if installed(runtime_dir):
        return True
    npm = shutil.which("npm")
    if npm is None:
        log.warning("npm not found: Node.js runtimes will carry no AWS SDK (functions may bundle their own)")
        return False
    stage = PINS / "node_modules"
    shutil.rmtree(stage, ignore_errors=True)
    done = subprocess.run([npm, "ci", "--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
                          cwd=PINS, check=False, timeout=600)
    if done.returncode != 0:
        log.warning("npm ci of the AWS SDK for JavaScript failed (exit %d): Node.js runtimes carry no SDK",
                    done.returncode)
        return False
    (stage / MARKER).write_text(_digest())
    target = runtime_dir / "node_modules"
    old = runtime_dir / f".node_modules.old.{os.getpid()}"
    if target.exists():
        os.replace(target, old)
    os.replace(stage, target)
    shutil.rmtree(old, ignore_errors=True)
    for dirpath, dirnames, filenames in os.walk(target):  # readable by the environments' user
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, 0o644 | (os.stat(path).st_mode & 0o111))
    return True


if __name__ == "__main__":
    logging.basicConfig(level="INFO", format="%(message)s")
    sys.exit(0 if install() else 0)  # never fails `make`: the docs say what is missing
