"""What the asynchronous-invocation tests share: a real SQS-compatible server (moto's) and a Kindling started
with fast async timings that delivers to it."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.conftest import Server, free_port

DELAY_SCALE = 0.01  # 60 s / 120 s retry delays become 0.6 s / 1.2 s; MaximumEventAgeInSeconds 60 becomes 0.6 s


class Sqs:
    """moto's server on a free loopback port."""

    def __init__(self, log_path: Path) -> None:
        exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
        if exe is None:
            if os.environ.get("CI"):
                pytest.fail("moto_server is missing: `pip install -e '.[test]'` installs moto[server]")
            pytest.skip("moto_server is not installed (pip install 'moto[server]')")
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(self.port)], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start: {log_path.read_text()}") from None
                time.sleep(0.05)
        self.client = boto3.client("sqs", endpoint_url=self.endpoint, region_name="us-east-1",
                                   aws_access_key_id="test", aws_secret_access_key="test")

    def queue(self) -> tuple[str, str]:
        """A new queue: (url, arn)."""
        url = self.client.create_queue(QueueName=f"q-{uuid.uuid4().hex[:12]}")["QueueUrl"]
        arn = self.client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        return url, arn

    def receive(self, url: str, count: int = 1, timeout: float = 30.0) -> list[dict[str, Any]]:
        """At least ``count`` messages (deleted once read), bodies parsed as JSON when they are."""
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            out = self.client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                              MessageAttributeNames=["All"])
            for m in out.get("Messages", []):
                self.client.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
                try:
                    m["Body"] = json.loads(m["Body"])
                except ValueError:
                    pass
                got.append(m)
        assert len(got) >= count, f"expected {count} message(s) on {url}, got {len(got)}"
        return got

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def sqs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sqs]:
    s = Sqs(tmp_path_factory.mktemp("moto") / "moto.log")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def async_server(tmp_path_factory: pytest.TempPathFactory, sqs: Sqs) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("kindling-async") / "data", async_delay_scale=str(DELAY_SCALE),
                 sqs_endpoint=sqs.endpoint).start()
    yield srv
    srv.stop()


def log_messages(server: Server, function_name: str) -> list[dict[str, Any]]:
    """Every log event of a function, oldest first, read from the files under the data dir."""
    out = []
    for path in (server.data_dir / "logs").rglob("*.jsonl"):
        if function_name not in str(path):
            continue
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return sorted(out, key=lambda e: e["timestamp"])


def plain(doc: Any) -> Any:
    """A boto3 answer as the recordings keep it: timestamps read "datetime"."""
    if isinstance(doc, dict):
        return {k: plain(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [plain(v) for v in doc]
    return "datetime" if isinstance(doc, datetime.datetime) else doc


def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
