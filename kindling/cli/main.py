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

from kindling import credentials as credentials_mod
from kindling import settings as settings_mod
from kindling.settings import SETTINGS, Settings


def _serve_options(f: Any) -> Any:
    for s in reversed(SETTINGS):
        f = click.option(s.flag, s.name, type=s.type, default=None, envvar=s.envvar, show_envvar=True,
                         multiple=s.repeatable, callback=_join if s.repeatable else None,
                         help=f"{s.help} [default: {s.default}]")(f)
    return f


def _join(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> str | None:
    """A repeatable flag's values as one setting: "a,b" (None when not given: the default applies)."""
    return ",".join(values) if values else None


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
    from kindling.network.vpc import VpcFileError

    cfg = Settings.from_env(**options)
    import logging

    logging.basicConfig(level=cfg.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        kindling = Kindling(cfg)
    except (credentials_mod.CredentialsError, VpcFileError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"Kindling {_version()} on http://{cfg.host}:{cfg.port} (data in {cfg.data_path})", err=True)
    click.echo(f"Runtimes: {', '.join(kindling.functions.runtimes.found())}", err=True)
    if kindling.created_credentials:
        click.echo(f"Created the API key pair in {credentials_mod.path(cfg)}; requests must be signed with it "
                   f"(shown once; `kindling credentials --data-dir {cfg.data_dir}` prints it again):\n"
                   f"  {kindling.credentials.exports()}", err=True)
    # http: uvicorn's httptools protocol with Kindling's caps and timeouts against hostile clients (see
    # kindling/frontend/connections.py); ws="none": a WebSocket upgrade is a plain request the API answers 400.
    uvicorn.run(App(kindling), host=cfg.host, port=cfg.port, loop="uvloop", http=_http_protocol(cfg), ws="none",
                lifespan="on", access_log=False, log_level=cfg.log_level, timeout_graceful_shutdown=5)


def _http_protocol(cfg: Settings) -> Any:
    import logging
    import resource

    from kindling.frontend import connections

    max_connections = cfg.api_max_connections
    open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if open_files != resource.RLIM_INFINITY and max_connections > open_files // 2:
        max_connections = open_files // 2  # the other half: environments, Runtime API, logs, the store
        logging.getLogger("kindling").warning(
            "--api-max-connections %d is more than half the open-file limit (ulimit -n %d): using %d.",
            cfg.api_max_connections, open_files, max_connections)
    return connections.protocol_class(max_connections, cfg.api_max_connections_per_client, cfg.api_header_timeout,
                                      cfg.api_read_timeout, cfg.api_max_header_bytes)


@cli.command("settings-doc")
def settings_doc() -> None:
    """Print docs/settings.md, generated from the settings table."""
    click.echo(settings_mod.markdown(), nl=False)


data_dir_option = click.option("--data-dir", envvar="KINDLING_DATA_DIR", default=None, show_envvar=True,
                               help="Kindling's data dir, whose credentials.json is used. [default: .kindling]")


@cli.command("credentials")
@data_dir_option
def show_credentials(data_dir: str | None) -> None:
    """Print the key pair API requests must be signed with, and the shell line that makes clients use it."""
    try:
        pair, _ = credentials_mod.load(Settings.from_env(data_dir=data_dir), create=False)
    except credentials_mod.CredentialsError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"# Access key id:     {pair.access_key_id}\n# Secret access key: {pair.secret_access_key}")
    click.echo(pair.exports())


# -- client commands ------------------------------------------------------------------------------
def endpoint_option(f: Any) -> Any:
    """--endpoint-url, and --data-dir for the credentials when AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are unset."""
    return click.option("--endpoint-url", envvar="KINDLING_ENDPOINT", default="http://127.0.0.1:9000",
                        show_default=True, help="Kindling's API.")(data_dir_option(f))


def _signing(data_dir: str | None) -> tuple[Any, str]:
    """(botocore Credentials, region): AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, else Kindling's own pair."""
    from botocore.credentials import Credentials

    cfg = Settings.from_env(data_dir=data_dir)
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        return Credentials(key, secret), cfg.region
    try:
        pair, _ = credentials_mod.load(cfg, create=False)
    except credentials_mod.CredentialsError as exc:
        raise click.ClickException(f"{exc}. Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or pass the server's "
                                   "--data-dir.") from exc
    return Credentials(pair.access_key_id, pair.secret_access_key), cfg.region


def _client(endpoint: str, data_dir: str | None) -> Any:
    import boto3
    from botocore.config import Config

    creds, region = _signing(data_dir)
    return boto3.client("lambda", endpoint_url=endpoint, region_name=region, aws_access_key_id=creds.access_key,
                        aws_secret_access_key=creds.secret_key,
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
        hint = " (`kindling credentials --data-dir DIR` prints the server's key pair)" \
            if err.get("Code") in ("UnrecognizedClientException", "InvalidSignatureException") else ""
        message = str(err.get("Message", "")).split("\n\n")[0]  # not the canonical request a mismatch carries
        raise click.ClickException(f"{err.get('Code')}: {message}{hint}")
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
           env: tuple[str, ...], endpoint_url: str, data_dir: str | None) -> None:
    """Create or update a function from a directory or a zip."""
    client = _client(endpoint_url, data_dir)
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
def list_functions(endpoint_url: str, data_dir: str | None) -> None:
    """List functions."""
    client = _client(endpoint_url, data_dir)
    try:
        for page in client.get_paginator("list_functions").paginate():
            for fn in page["Functions"]:
                click.echo(f"{fn['FunctionName']:<40} {fn.get('Runtime', 'Image'):<12} {fn['MemorySize']:>6} MB  "
                           f"{fn['LastModified']}")
    except Exception as exc:  # noqa: BLE001
        _fail(exc)


@cli.command("rm")
@click.argument("name")
@endpoint_option
def remove(name: str, endpoint_url: str, data_dir: str | None) -> None:
    """Delete a function."""
    try:
        _client(endpoint_url, data_dir).delete_function(FunctionName=name)
        click.echo(f"deleted {name}")
    except Exception as exc:  # noqa: BLE001
        _fail(exc)


@cli.command()
@click.argument("name")
@click.option("--payload", default="{}", help="The event, as JSON.")
@click.option("--qualifier", default=None)
@click.option("--logs/--no-logs", "show_logs", default=False, help="Print the invoke's log tail to stderr.")
@endpoint_option
def invoke(name: str, payload: str, qualifier: str | None, show_logs: bool, endpoint_url: str,
           data_dir: str | None) -> None:
    """Invoke a function and print its result."""
    args: dict[str, Any] = {"FunctionName": name, "Payload": payload.encode(), "LogType": "Tail"}
    if qualifier:
        args["Qualifier"] = qualifier
    try:
        out = _client(endpoint_url, data_dir).invoke(**args)
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
@click.option("--request-id", default=None, help="Only the lines of this invocation (START to REPORT), across streams.")
@endpoint_option
def logs(name: str, follow: bool, since: int, request_id: str | None, endpoint_url: str,
         data_dir: str | None) -> None:
    """Print a function's log (all its streams, in time order), or one invocation's."""
    import urllib.error
    import urllib.parse
    import urllib.request

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    creds, region = _signing(data_dir)
    signer = SigV4Auth(creds, "lambda", region)
    seen: set[str] = set()  # eventIds of the newest timestamp printed
    while True:
        url = f"{endpoint_url}/_kindling/logs/{urllib.parse.quote(name, safe='')}?since={since}"
        if request_id:
            url += "&requestId=" + urllib.parse.quote(request_id, safe="")
        signed = AWSRequest(method="GET", url=url)
        signer.add_auth(signed)  # like every API request, signed (fresh X-Amz-Date each poll)
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=dict(signed.headers.items()))) as resp:
                events = json.load(resp)["events"]
        except urllib.error.HTTPError as exc:
            with exc:
                message = str(json.loads(exc.read() or b"{}").get("message", exc.reason)).split("\n\n")[0]
            raise click.ClickException(f"{exc.headers.get('X-Amzn-ErrorType', exc.code)}: {message}") from exc
        for e in events:
            if e["eventId"] in seen or e["timestamp"] < since:
                continue
            if e["timestamp"] > since:
                since, seen = e["timestamp"], set()
            seen.add(e["eventId"])
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(e["timestamp"] / 1000))
            click.echo(f"{stamp} {e['message']}")
        if not follow:
            return
        time.sleep(0.5)


@cli.command()
@click.argument("name")
@click.option("--endpoint-url", envvar="KINDLING_ENDPOINT", default="http://127.0.0.1:9000", show_default=True,
              help="Kindling's API.")
def stats(name: str, endpoint_url: str) -> None:
    """Print a function's metrics since the server started: invocations, errors, throttles, duration
    (average, p50/p90/p99, max), cold starts, per version and alias (from /metrics)."""
    import urllib.request

    from kindling.observability.stats import table

    try:
        with urllib.request.urlopen(f"{endpoint_url}/metrics", timeout=30) as resp:
            text = resp.read().decode()
    except OSError as exc:
        raise click.ClickException(f"could not read {endpoint_url}/metrics: {exc}") from exc
    click.echo(table(text, name))


def _version() -> str:
    from kindling import __version__
    return __version__


def main() -> None:
    cli(auto_envvar_prefix="KINDLING")


if __name__ == "__main__":
    main()
