"""State survives a restart on the same data dir."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import HELLO, ROLE, Server, make_zip, unique


def test_restart_keeps_everything(tmp_path: Path):
    srv = Server(tmp_path / "data").start()
    try:
        lam = srv.client()
        name = unique()
        created = lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                                      Code={"ZipFile": make_zip({"app.py": HELLO})}, Tags={"team": "a"},
                                      Environment={"Variables": {"KEY": "V"}})
        config = lam.get_function_configuration(FunctionName=name)
        config.pop("ResponseMetadata")
    finally:
        srv.stop()
    srv = Server(tmp_path / "data").start()
    try:
        lam = srv.client()
        again = lam.get_function_configuration(FunctionName=name)
        again.pop("ResponseMetadata")
        assert again == config
        assert lam.list_tags(Resource=created["FunctionArn"])["Tags"] == {"team": "a"}
        out = lam.invoke(FunctionName=name, Payload=b'{"name": "again"}')
        assert out["Payload"].read() == b'{"hello": "again"}'
    finally:
        srv.stop()


def test_aws_cli_smoke(server, tmp_path: Path):
    zip_path = tmp_path / "hello.zip"
    zip_path.write_bytes(make_zip({"app.py": HELLO}))
    name = unique("cli")
    base = [sys.executable, "-m", "awscli", "lambda", "--endpoint-url", server.endpoint, "--region", "us-east-1",
            "--output", "json"]
    env = {**server.aws_env(), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(base + ["create-function", "--function-name", name, "--runtime", "python3.12",
                                 "--handler", "app.handler", "--role", ROLE, "--zip-file", f"fileb://{zip_path}"],
                         capture_output=True, text=True, env=env, check=True)
    assert f'"FunctionName": "{name}"' in out.stdout
    out = subprocess.run(base + ["list-functions"], capture_output=True, text=True, env=env, check=True)
    assert name in out.stdout
    result = tmp_path / "out.json"
    out = subprocess.run(base + ["invoke", "--function-name", name,
                                 "--payload", '{"name": "cli"}', str(result)], capture_output=True, text=True,
                         env=env)
    assert out.returncode == 0, out.stderr
    assert result.read_text() == '{"hello": "cli"}'
    subprocess.run(base + ["delete-function", "--function-name", name], env=env, check=True, capture_output=True)
