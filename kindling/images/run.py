"""How an environment runs a container image, as Lambda runs it.

ImageConfig's EntryPoint, Command and WorkingDirectory override the image's ENTRYPOINT, CMD and WORKDIR
(each on its own; an empty list is "not set"); the command is ENTRYPOINT + CMD; ``_HANDLER`` is the
first element of CMD (what Lambda's base images' runtime clients load); the image's ENV lies under
Lambda's variables and the function's own; the working directory is the image's WORKDIR, else ``/``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

TASK_ROOT = "/var/task"
RUNTIME_DIR = "/var/runtime"
NOT_FOR_IMAGES = ("AWS_EXECUTION_ENV", "PYTHONPATH")  # a managed runtime's; an image brings its own


@dataclasses.dataclass(frozen=True)
class ImageRun:
    root: str  # the unpacked rootfs on the host (under the code store's .images)
    argv: tuple[str, ...]
    env: dict[str, str]  # the image's ENV
    cwd: str
    handler: str

    def spawn_spec(self) -> dict[str, str]:
        """What the spawner needs beyond a zip function's spec (kindling.sandbox.image_root)."""
        return {"image_root": self.root, "cwd": self.cwd}

    def environment(self, env: dict[str, str]) -> dict[str, str]:
        """The final touch to an environment's variables (the image's ENV went in under Lambda's and the
        function's own): no managed runtime's variables unless the image sets them, _HANDLER from CMD."""
        out = {k: v for k, v in env.items() if k not in NOT_FOR_IMAGES or k in self.env}
        out["_HANDLER"] = self.handler
        out["LAMBDA_TASK_ROOT"] = self.env.get("LAMBDA_TASK_ROOT", TASK_ROOT)
        out["LAMBDA_RUNTIME_DIR"] = self.env.get("LAMBDA_RUNTIME_DIR", RUNTIME_DIR)
        out["PWD"] = self.cwd
        return out


def image_run(root: str, settings: dict[str, Any], image_config: dict[str, Any] | None) -> ImageRun:
    """``settings``: the image's own (kindling.images.pull.image_config); ``image_config``: the function's."""
    ic = image_config or {}
    entrypoint = list(ic.get("EntryPoint") or settings["Entrypoint"])
    command = list(ic.get("Command") or settings["Cmd"])
    cwd = ic.get("WorkingDirectory") or settings["WorkingDir"] or "/"
    env = dict(e.split("=", 1) for e in settings["Env"])
    return ImageRun(root, tuple(entrypoint + command) or ("",), env, "/" + cwd.lstrip("/"),
                    command[0] if command else "")
