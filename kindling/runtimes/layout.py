"""What a runtime's execution environment looks like from inside, as on Lambda: paths, variables, the OS it says.

Every isolated environment sees its interpreter's install prefix at ``/var/lang`` (``/var/lang/bin/python3.12``,
``/var/lang/lib/python3.12/...``), Kindling's runtime client at ``/var/runtime``, the code at ``/var/task`` and
layers at ``/opt``. The variables a runtime starts with are built here and nowhere else (the recorded
introspection of real Lambda, ``test_introspection_invoke[<runtime>]``, is the reference; tests/test_layout.py
compares field by field). The sandbox spawner turns the spec keys made here into mounts (kindling.sandbox.shell).
"""

from __future__ import annotations

import os
import stat

from kindling.sandbox.layout import LANG_DIR, RUNTIME_DIR, TASK_ROOT

__all__ = ["LANG_DIR", "RUNTIME_DIR", "TASK_ROOT", "os_base", "managed", "variables", "spec"]

XRAY_DAEMON = ("169.254.100.1", 2000)  # Lambda's address shape; nothing listens there (no X-Ray daemon)

AL2 = ("python3.9", "python3.10", "python3.11", "provided.al2", "nodejs18.x", "java8.al2", "java11", "java17")


def os_base(runtime: str) -> str:
    """"al2" or "al2023": the Amazon Linux a runtime is based on (docs.aws.amazon.com/lambda/latest/dg/
    lambda-runtimes.html); its /etc/os-release says so (kindling.sandbox.layout.OS_RELEASE)."""
    return "al2" if runtime in AL2 else "al2023"


def managed(runtime: str) -> bool:
    """A runtime Lambda provides (its start command can be wrapped by AWS_LAMBDA_EXEC_WRAPPER)."""
    return not runtime.startswith("provided")


def entrypoint_error(runtime: str, host_task_root: str) -> str | None:
    """Lambda's message when a custom runtime's bootstrap cannot be started (missing, or not executable by the
    function's user: code is root's, so the "other" bits decide), else None. The code is immutable once stored,
    so this is known before any environment starts; the invoke answers Runtime.InvalidEntrypoint with it."""
    if managed(runtime):
        return None
    path = os.path.join(host_task_root, "bootstrap")
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        st = None
    if st is None or not stat.S_ISREG(st.st_mode) or \
            os.path.commonpath([os.path.realpath(host_task_root), real]) != os.path.realpath(host_task_root):
        return f"Couldn't find valid bootstrap(s): [{TASK_ROOT}/bootstrap /opt/bootstrap]"
    if not st.st_mode & stat.S_IXOTH:
        return f"fork/exec {TASK_ROOT}/bootstrap: permission denied"
    return None


def wrapper(config: dict) -> str | None:
    """The function's AWS_LAMBDA_EXEC_WRAPPER, for a managed runtime (Lambda runs its start command through it)."""
    if not managed(str(config.get("Runtime", ""))):
        return None
    return ((config.get("Environment") or {}).get("Variables") or {}).get("AWS_LAMBDA_EXEC_WRAPPER") or None


def variables(runtime: str, task_root: str = TASK_ROOT, runtime_dir: str = RUNTIME_DIR) -> dict[str, str]:
    """The variables a runtime's environment starts with, besides the function's and the invoke's own, as recorded
    on Lambda (``task_root``/``runtime_dir``: as the environment sees them; host paths without isolation).

    provided.al2's recording has no /var/lang on PATH and LD_LIBRARY_PATH (there is none on AL2's custom runtime),
    and no AWS_EXECUTION_ENV, LC_CTYPE, PWD, SHLVL nor PYTHONPATH for either custom runtime."""
    lang = runtime != "provided.al2"
    host, port = XRAY_DAEMON
    env = {
        "PATH": ("/var/lang/bin:" if lang else "") + "/usr/local/bin:/usr/bin/:/bin:/opt/bin",
        "LD_LIBRARY_PATH": ("/var/lang/lib:" if lang else "") +
                           f"/lib64:/usr/lib64:{runtime_dir}:{runtime_dir}/lib:{task_root}:{task_root}/lib:/opt/lib",
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "LAMBDA_TASK_ROOT": task_root,
        "LAMBDA_RUNTIME_DIR": runtime_dir,
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        "AWS_XRAY_DAEMON_ADDRESS": f"{host}:{port}",
        "_AWS_XRAY_DAEMON_ADDRESS": host,
        "_AWS_XRAY_DAEMON_PORT": str(port),
    }
    if managed(runtime):
        env.update({"AWS_EXECUTION_ENV": f"AWS_Lambda_{runtime}", "PWD": task_root, "SHLVL": "0"})
    if runtime.startswith("python"):  # (NODE_PATH: the Node runtime client sets it, kindling/runtimes/node)
        env.update({"PYTHONPATH": runtime_dir, "LC_CTYPE": "C.UTF-8"})
    return env


def spec(runtime: str, lang: str | None, system_root: str | None) -> dict[str, str]:
    """The layout keys of a spawn/template spec: the interpreter prefix to bind at /var/lang, the minimal system
    root of a custom runtime, and which /etc/os-release to write. Only paths Kindling made (the spawner checks)."""
    out = {"os": os_base(runtime)}
    if lang:
        out["lang"] = lang
    if system_root and not managed(runtime):
        out["system_root"] = system_root
    return out
