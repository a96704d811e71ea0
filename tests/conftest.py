"""Fixtures that start the real `kindling serve` and talk to it as a Lambda user would."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

ROLE = "arn:aws:iam::000000000000:role/lambda-role"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A `kindling serve` process on a free port with its own data dir."""

    def __init__(self, data_dir: Path, **settings: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"server-{self.port}.log"

    def start(self) -> Server:
        env = {**os.environ, **{f"KINDLING_{k.upper()}": str(v) for k, v in self.settings.items()}}
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kindling.cli.main", "serve", "--port", str(self.port),
             "--data-dir", str(self.data_dir)], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kindling serve exited: {self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(self.endpoint + "/_kindling/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("kindling serve did not become healthy")

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
            self.log.close()

    def client(self, service: str = "lambda", **config: object) -> object:
        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id="test", aws_secret_access_key="test",
                            config=Config(retries={"max_attempts": 1}, read_timeout=120, **config))


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="kindling-test-") as tmp:
        srv = Server(Path(tmp) / "data").start()
        yield srv
        srv.stop()


@pytest.fixture
def lam(server: Server):  # noqa: ANN201 - a botocore client
    return server.client()


def make_zip(files: dict[str, str | bytes], modes: dict[str, int] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o100000 | (modes or {}).get(name, 0o644)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, content)
    return buf.getvalue()


HELLO = 'def handler(event, context):\n    return {"hello": event.get("name", "world")}\n'


def unique(prefix: str = "fn") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def create_function(lam):  # noqa: ANN001, ANN201
    """Create functions that are deleted after the test: create_function(code=..., **CreateFunction args)."""
    made: list[str] = []

    def create(code: str | dict[str, str | bytes] = HELLO, **kwargs: object) -> dict:
        files = {"app.py": code} if isinstance(code, str) else code
        args: dict = {"FunctionName": unique(), "Runtime": "python3.12", "Role": ROLE, "Handler": "app.handler",
                      "Code": {"ZipFile": make_zip(files)}}
        args.update(kwargs)
        out = lam.create_function(**args)
        made.append(out["FunctionName"])
        return out

    yield create
    for name in made:
        try:
            lam.delete_function(FunctionName=name)
        except lam.exceptions.ResourceNotFoundException:
            pass
