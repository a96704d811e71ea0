"""Fixtures that start the real `kindling serve` and talk to it as a Lambda user would."""

from __future__ import annotations

import io
import json
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
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

ROLE = "arn:aws:iam::000000000000:role/lambda-role"
REGION = "us-east-1"
# The key pair test servers are started with (KINDLING_ACCESS_KEY_ID / KINDLING_SECRET_ACCESS_KEY)
ACCESS_KEY_ID = "AKIAKINDLINGTEST0000"
SECRET_ACCESS_KEY = "kindling/test/secret+key/000000000000000"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A `kindling serve` process on a free port with its own data dir.

    It accepts requests signed with ``keys`` (the test pair by default); with ``keys=None`` it is started
    without KINDLING_ACCESS_KEY_ID/KINDLING_SECRET_ACCESS_KEY and uses (or creates) the pair in its data dir.
    """

    def __init__(self, data_dir: Path, keys: tuple[str, str] | None = (ACCESS_KEY_ID, SECRET_ACCESS_KEY),
                 **settings: str) -> None:
        self.data_dir = data_dir
        self.given_keys = keys
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"server-{self.port}.log"

    def start(self) -> Server:
        env = {k: v for k, v in os.environ.items() if k not in ("KINDLING_ACCESS_KEY_ID", "KINDLING_SECRET_ACCESS_KEY")}
        if self.given_keys is not None:
            env["KINDLING_ACCESS_KEY_ID"], env["KINDLING_SECRET_ACCESS_KEY"] = self.given_keys
        env.update({f"KINDLING_{k.upper()}": str(v) for k, v in self.settings.items()})
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

    @property
    def code_dir(self) -> Path:
        """The code store as the server sees it: under root it is an image mounted in the server's own mount
        namespace (kindling/store/code_volume.py), so the host's view of data_dir/code is empty."""
        assert self.proc is not None
        return Path(f"/proc/{self.proc.pid}/root{self.data_dir.resolve()}/code")

    @property
    def keys(self) -> tuple[str, str]:
        """The (access key id, secret) the server accepts: the given pair, else the one in its data dir."""
        if self.given_keys is not None:
            return self.given_keys
        stored = json.loads((self.data_dir / "credentials.json").read_text())
        return stored["access_key_id"], stored["secret_access_key"]

    def aws_env(self) -> dict[str, str]:
        """AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for an AWS CLI or SDK process talking to this server."""
        return {"AWS_ACCESS_KEY_ID": self.keys[0], "AWS_SECRET_ACCESS_KEY": self.keys[1]}

    def client(self, service: str = "lambda", keys: tuple[str, str] | None = None, region: str = REGION,
               **config: object) -> object:
        key_id, secret = keys or self.keys
        return boto3.client(service, endpoint_url=self.endpoint, region_name=region,
                            aws_access_key_id=key_id, aws_secret_access_key=secret,
                            config=Config(retries={"max_attempts": 1}, read_timeout=120, **config))

    def signed_request(self, method: str, path: str, data: bytes = b"", headers: dict[str, str] | None = None,
                       keys: tuple[str, str] | None = None) -> urllib.request.Request:
        """A raw urllib request to this server, SigV4-signed by botocore as boto3 would sign it."""
        req = AWSRequest(method=method, url=self.endpoint + path, data=data, headers=headers or {})
        SigV4Auth(Credentials(*(keys or self.keys)), "lambda", REGION).add_auth(req)
        return urllib.request.Request(self.endpoint + path, data=data or None, method=method,
                                      headers=dict(req.headers.items()))


@pytest.fixture(scope="session", autouse=True)
def aws_credentials() -> Iterator[None]:
    """AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY set to the test pair, as a user would export them, for the CLI and
    SDK processes tests start (and so that no real AWS credentials from the environment are ever sent)."""
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")}
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.update(AWS_ACCESS_KEY_ID=ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


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
    delete_functions(lam, made)


def delete_functions(lam, names: list[str]) -> None:  # noqa: ANN001 - a botocore client
    """Delete the functions a test made, those it deleted itself included."""
    for name in names:
        try:
            lam.delete_function(FunctionName=name)
        except lam.exceptions.ResourceNotFoundException:
            pass


@pytest.fixture(scope="module")
def hostile_server() -> Iterator[Server]:
    """A server of the test module's own, so that an attack that does break it cannot take the rest of the suite
    down with it (the adversarial suite, tests/adversarial.py)."""
    with tempfile.TemporaryDirectory(prefix="kindling-hostile-") as tmp:
        srv = Server(Path(tmp) / "data").start()
        yield srv
        srv.stop()


@pytest.fixture
def bystander(hostile_server: Server):  # noqa: ANN201 - a tests.adversarial.Bystander
    """A hello function on ``hostile_server`` that must keep answering within 2x its p50 during an attack."""
    from tests.adversarial import Bystander

    b = Bystander(hostile_server)
    yield b
    b.delete()
