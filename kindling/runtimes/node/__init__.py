"""Node.js runtimes: which ``node`` runs each nodejs*.x, and the command that starts Kindling's runtime client.

The client is ``index.cjs`` here (plain JavaScript, Node's standard library only). Environments see the runtime
directory (kindling/runtimes/python, bound at /var/runtime) and nothing else of Kindling's, so at start Kindling
copies the client there as ``index.cjs``; the AWS SDK for JavaScript the runtimes carry is installed beside it, in
``node_modules`` (``python -m kindling.runtimes.node_sdk``, run by ``make``), which is where Lambda has it
(/var/runtime/node_modules, on NODE_PATH).

The command is the one Lambda's /var/runtime/bootstrap runs: ``node --expose-gc --max-http-header-size 81920
--max-semi-space-size=S --max-old-space-size=O /var/runtime/index.cjs`` with the heap sized from the function's
MemorySize, and ``$AWS_LAMBDA_EXEC_WRAPPER`` in front when the function sets it.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path

CLIENT = Path(__file__).parent / "index.cjs"
RUNTIMES = ("nodejs18.x", "nodejs20.x", "nodejs22.x")
WRAPPER = "AWS_LAMBDA_EXEC_WRAPPER"


def major(runtime: str) -> int:
    return int(runtime.removeprefix("nodejs").removesuffix(".x"))


@cache
def find(runtime: str, explicit: str | None = None) -> str | None:
    """The node binary for ``runtime``: ``explicit`` if given and of that major version, else one found."""
    want = major(runtime)
    if explicit is not None:
        return explicit if _major_of(explicit) == want else None
    candidates = [shutil.which(f"node{want}"), shutil.which("node"), shutil.which("nodejs")]
    candidates += sorted(glob.glob(os.path.expanduser(f"~/.nvm/versions/node/v{want}.*/bin/node")))
    for candidate in candidates:
        if candidate and _major_of(os.path.realpath(candidate)) == want:
            return os.path.realpath(candidate)
    return None


@cache
def _major_of(binary: str) -> int | None:
    """The major version of a node binary (asked once per path: a node start costs tens of ms)."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False).stdout
        return int(out.strip().lstrip("v").split(".")[0])
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def command(interpreter: str, runtime_dir: str, memory_mb: int) -> list[str]:
    """Lambda's bootstrap's command line, with node's heap sized from the function's MemorySize as it does."""
    new_space = memory_mb // 10
    return [interpreter, "--expose-gc", "--max-http-header-size", "81920",
            f"--max-semi-space-size={new_space // 2}", f"--max-old-space-size={memory_mb - new_space}",
            os.path.join(runtime_dir, CLIENT.name)]


def install_runtime(runtime_dir: Path) -> None:
    """Copy the client into the runtime directory environments see (when it changed)."""
    target = runtime_dir / CLIENT.name
    data = CLIENT.read_bytes()
    try:
        if target.read_bytes() == data:
            return
    except OSError:
        pass
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o644)
    os.replace(tmp, target)
