"""Which Lambda runtimes this host can run, and the command that starts each.

python3.9 to python3.13 run Kindling's own bootstrap under a matching
interpreter found on the host (``--runtimes`` names paths explicitly; otherwise
PATH and ~/.pyenv/versions are searched). nodejs18.x, nodejs20.x and nodejs22.x run
Kindling's own Node.js runtime client (kindling/runtimes/node) under a ``node``
of that major version (``--runtimes nodejs20.x=/path/to/node``, else PATH and
~/.nvm/versions/node), started as Lambda's bootstrap starts it: its node flags,
and ``AWS_LAMBDA_EXEC_WRAPPER`` in front. ``provided.al2`` and
``provided.al2023`` run the function's own executable ``bootstrap``.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path

from kindling.runtimes import node, sdk

BOOTSTRAP = Path(__file__).parent / "python" / "bootstrap.py"
PROVIDED = ("provided.al2", "provided.al2023")
PYTHONS = tuple(f"python3.{minor}" for minor in range(9, 14))
NODES = node.RUNTIMES
# Runtimes Lambda no longer lets anyone create or update functions with.
DEPRECATED = ("python2.7", "python3.6", "python3.7", "python3.8", "nodejs", "nodejs4.3", "nodejs6.10",
              "nodejs8.10", "nodejs10.x", "nodejs12.x", "nodejs14.x", "nodejs16.x", "java8", "go1.x",
              "provided", "ruby2.5", "ruby2.7", "dotnetcore1.0", "dotnetcore2.0", "dotnetcore2.1",
              "dotnetcore3.1", "dotnet6")


class Runtimes:
    def __init__(self, spec: str = "") -> None:
        self.explicit = dict(item.strip().split("=", 1) for item in spec.split(",") if "=" in item)

    def interpreter(self, runtime: str) -> str | None:
        if runtime in NODES:  # named or found, a node only counts if it is that major version
            return node.find(runtime, self.explicit.get(runtime))
        if runtime in self.explicit:
            return self.explicit[runtime]
        if runtime in PYTHONS:
            return _find_python(runtime)
        return None

    def available(self, runtime: str) -> bool:
        return runtime in PROVIDED or self.interpreter(runtime) is not None

    def found(self) -> list[str]:
        """Every runtime this host can run (what `kindling serve` says at start)."""
        return [r for r in PYTHONS + NODES if self.interpreter(r) is not None] + list(PROVIDED)

    def command(self, runtime: str, task_root: str, runtime_dir: str, lang_dir: str | None = None,
                wrapper: str | None = None, memory_mb: int = 128) -> list[str]:
        """argv that starts the runtime, with paths as the execution environment sees them: the interpreter at
        ``lang_dir``/bin when the environment sees its prefix there (kindling.runtimes.layout), else at its host
        path. ``wrapper`` (AWS_LAMBDA_EXEC_WRAPPER, managed runtimes only): the runtime's start command becomes
        its arguments, as on Lambda. ``memory_mb``: the function's MemorySize, which Node's heap is sized from."""
        if runtime in PROVIDED:
            return [os.path.join(task_root, "bootstrap")]
        interpreter = self.interpreter(runtime)
        if interpreter is None:
            raise LookupError(runtime)
        if runtime in NODES:
            shown = f"{lang_dir}/bin/node" if lang_dir is not None else interpreter
            argv = node.command(shown, runtime_dir, memory_mb)
        else:
            if lang_dir is not None:
                interpreter = f"{lang_dir}/bin/{runtime}"
            # -s: no user site; the function's code and /opt/python come via PYTHONPATH as on Lambda.
            argv = [interpreter, "-s", os.path.join(runtime_dir, BOOTSTRAP.name)]
        return [wrapper, *argv] if wrapper else argv

    def lang(self, runtime: str) -> str | None:
        """The install prefix of ``runtime``'s interpreter on the host (seen at /var/lang inside), if any."""
        interpreter = self.interpreter(runtime)
        return str(Path(interpreter).resolve().parent.parent) if interpreter else None

    def precompile(self) -> None:
        """Compile the bootstrap's code cache (and the bytecode of the AWS SDK the runtimes carry) for every
        interpreter here, once: environments see the runtime directory read-only and would otherwise compile
        it on every cold start."""
        for runtime in PYTHONS:
            interpreter = self.interpreter(runtime)
            if interpreter is None:
                continue
            tag = "cpython-" + runtime.removeprefix("python").replace(".", "")
            cache = BOOTSTRAP.parent / "__pycache__" / f"bootstrap.body.{tag}.pyc"
            if cache.exists() and cache.stat().st_mtime >= BOOTSTRAP.stat().st_mtime:
                continue
            subprocess.run([interpreter, "-s", str(BOOTSTRAP), "--precompile"], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        sdk.precompile({r: i for r in PYTHONS if (i := self.interpreter(r)) is not None})
        node.install_runtime(BOOTSTRAP.parent)

    def prefixes(self) -> list[str]:
        """Install prefixes of every interpreter found: the only directories a spec may bind at /var/lang."""
        return sorted({p for r in PYTHONS + NODES + tuple(self.explicit) if (p := self.lang(r))})


@cache
def _find_python(runtime: str) -> str | None:
    """A real interpreter, never a pyenv shim (a shim costs tens of ms per start)."""
    version = runtime.removeprefix("python")
    for candidate in sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python{version}"))):
        return candidate
    found = shutil.which(f"python{version}")
    if found and "/shims/" not in found:
        return os.path.realpath(found)
    return None
