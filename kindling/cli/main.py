"""`kindling`: serve the platform, and a small client for people who don't use the AWS CLI."""

from __future__ import annotations

import base64
import io
import json
import os
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import click

from kindling import settings as settings_mod
from kindling.settings import SETTINGS, Settings


def _serve_options(f: Any) -> Any:
    for s in reversed(SETTINGS):
        f = click.option(s.flag, s.name, type=s.type, default=None, envvar=s.envvar, show_envvar=True,
                         help=f"{s.help} [default: {s.default}]")(f)
    return f


@click.group()
@click.version_option(package_name="kindling")
def cli() -> None:
    """Kindling: run AWS Lambda functions, unmodified, on your own machine."""


@cli.command()
@_serve_options
def serve(**options: Any) -> None:
    """Start Kindling: the Lambda API, execution environments and the embedded store."""
    import uvicorn

    from kindling.core import Kindling
    from kindling.frontend.app import App

    cfg = Settings.from_env(**options)
    kindling = Kindling(cfg)
    click.echo(f"Kindling {_version()} on http://{cfg.host}:{cfg.port} (data in {cfg.data_path})", err=True)
    uvicorn.run(App(kindling), host=cfg.host, port=cfg.port, loop="uvloop", http="httptools", lifespan="on",
                access_log=False, log_level=cfg.log_level, timeout_graceful_shutdown=5)


@cli.command("settings-doc")
def settings_doc() -> None:
    """Print docs/settings.md, generated from the settings table."""
    click.echo(settings_mod.markdown(), nl=False)


# -- client commands ------------------------------------------------------------------------------
endpoint_option = click.option("--endpoint-url", envvar="KINDLING_ENDPOINT", default="http://127.0.0.1:9000",
                               show_default=True, help="Kindling's API.")


def _client(endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    cfg = Settings.from_env()
    return boto3.client("lambda", endpoint_url=endpoint, region_name=cfg.region,
                        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "kindling"),
                        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "kindling"),
                        config=Config(retries={"max_attempts": 1}, read_timeout=900))


def _zip(path: Path) -> bytes:
    if path.is_file():
        return path.read_bytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(path.rglob("*")):
            if file.is_file() and "__pycache__" not in file.parts:
                info = zipfile.ZipInfo(str(file.relative_to(path)))
                info.external_attr = (file.stat().st_mode & 0o777 | 0o100000) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, file.read_bytes())
    return buf.getvalue()


def _fail(exc: Exception) -> None:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        err = exc.response["Error"]
        raise click.ClickException(f"{err.get('Code')}: {err.get('Message')}")
    raise click.ClickException(str(exc))


@cli.command()
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--name", required=True, help="Function name.")
@click.option("--runtime", default="python3.12", show_default=True)
@click.option("--handler", default="app.handler", show_default=True)
@click.option("--memory", type=int, default=None, help="MemorySize in MB.")
@click.option("--timeout", type=int, default=None, help="Timeout in seconds.")
@click.option("--env", "env", multiple=True, help="KEY=VALUE, repeatable.")
@endpoint_option
def deploy(source: Path, name: str, runtime: str, handler: str, memory: int | None, timeout: int | None,
           env: tuple[str, ...], endpoint_url: str) -> None:
    """Create or update a function from a directory or a zip."""
    client = _client(endpoint_url)
    code = _zip(source)
    config: dict[str, Any] = {"Runtime": runtime, "Handler": handler}
    if memory:
        config["MemorySize"] = memory
    if timeout:
        config["Timeout"] = timeout
    if env:
        config["Environment"] = {"Variables": dict(item.split("=", 1) for item in env)}
    try:
        try:
            client.get_function_configuration(FunctionName=name)
        except client.exceptions.ResourceNotFoundException:
            out = client.create_function(FunctionName=name, Role="arn:aws:iam::000000000000:role/kindling",
                                         Code={"ZipFile": code}, **config)
            click.echo(f"created {out['FunctionArn']} ({out['CodeSize']} bytes)")
            return
        client.update_function_code(FunctionName=name, ZipFile=code)
        out = client.update_function_configuration(FunctionName=name, **config)
        click.echo(f"updated {out['FunctionArn']} ({out['CodeSize']} bytes)")
    except Exception as exc:  # noqa: BLE001 - every failure is shown as one line
        _fail(exc)


@cli.command("ls")
@endpoint_option
def list_functions(endpoint_url: str) -> None:
    """List functions."""
    client = _client(endpoint_url)
    try:
        for page in client.get_paginator("list_functions").paginate():
            for fn in page["Functions"]:
                click.echo(f"{fn['FunctionName']:<40} {fn['Runtime']:<12} {fn['MemorySize']:>6} MB  "
                           f"{fn['LastModified']}")
    except Exception as exc:  # noqa: BLE001
        _fail(exc)


@cli.command("rm")
@click.argument("name")
@endpoint_option
def remove(name: str, endpoint_url: str) -> None:
    """Delete a function."""
    try:
        _client(endpoint_url).delete_function(FunctionName=name)
        click.echo(f"deleted {name}")
    except Exception as exc:  # noqa: BLE001
        _fail(exc)


@cli.command()
@click.argument("name")
@click.option("--payload", default="{}", help="The event, as JSON.")
@click.option("--qualifier", default=None)
@click.option("--logs/--no-logs", "show_logs", default=False, help="Print the invoke's log tail to stderr.")
@endpoint_option
def invoke(name: str, payload: str, qualifier: str | None, show_logs: bool, endpoint_url: str) -> None:
    """Invoke a function and print its result."""
    args: dict[str, Any] = {"FunctionName": name, "Payload": payload.encode(), "LogType": "Tail"}
    if qualifier:
        args["Qualifier"] = qualifier
    try:
        out = _client(endpoint_url).invoke(**args)
    except Exception as exc:  # noqa: BLE001
        _fail(exc)
        return
    if show_logs and out.get("LogResult"):
        click.echo(base64.b64decode(out["LogResult"]).decode(errors="replace"), err=True, nl=False)
    click.echo(out["Payload"].read().decode(errors="replace"))
    if out.get("FunctionError"):
        sys.exit(1)


@cli.command()
@click.argument("name")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines.")
@click.option("--since", default=0, type=int, help="Only lines at or after this epoch ms.")
@endpoint_option
def logs(name: str, follow: bool, since: int, endpoint_url: str) -> None:
    """Print a function's log (all its streams, in time order)."""
    import urllib.request

    seen: set[tuple[object, ...]] = set()
    while True:
        with urllib.request.urlopen(f"{endpoint_url}/_kindling/logs/{name}?since={since}") as resp:
            events = json.load(resp)["events"]
        for e in events:
            key = (e["timestamp"], e["logStreamName"], e["message"])
            if key in seen:
                continue
            seen.add(key)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(e["timestamp"] / 1000))
            click.echo(f"{stamp} {e['message']}")
            since = max(since, e["timestamp"])
        if not follow:
            return
        time.sleep(0.5)


def _version() -> str:
    from kindling import __version__
    return __version__


def main() -> None:
    cli(auto_envvar_prefix="KINDLING")


if __name__ == "__main__":
    main()
