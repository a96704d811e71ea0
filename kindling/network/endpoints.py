"""Where AWS SDKs inside an environment send their calls: ``AWS_ENDPOINT_URL_<SERVICE>`` variables.

The services Kindling serves (SERVED) point at Kindling's own API; the operator points other services at stores
of their choice with ``--service-endpoint s3=http://127.0.0.1:5000`` (repeatable, or comma-separated; ``*=URL``
sets the generic ``AWS_ENDPOINT_URL`` for every service without a variable of its own). Variable names are the
SDKs' own (botocore's configprovider): the service id of the client name, upper case, '-' and ' ' as '_'
(``logs`` -> ``AWS_ENDPOINT_URL_CLOUDWATCH_LOGS``).

Inside an isolated environment the host's loopback is not reachable: Kindling's API is KINDLING_ADDRESS (port 80),
and an operator endpoint on the host's loopback, 127.0.0.1:PORT, is KINDLING_ADDRESS:PORT (the network plane
forwards it: ``exposed_ports``). Other endpoints are passed as they are. In the ``process`` sandbox the environment
is on the host's network and sees the real URLs. Nothing here runs on an invoke: the variables are made once.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from functools import cache

from kindling.network import KINDLING_ADDRESS, KINDLING_API_PORT

SERVED = ("lambda", "logs", "iam", "sts")  # answered by Kindling's own API
GENERIC = "*"  # --service-endpoint '*=URL': AWS_ENDPOINT_URL
MAX_URL = 1024
MAX_ENDPOINTS = 64
MAX_SPEC = MAX_ENDPOINTS * (MAX_URL + 64)
_SERVICE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


class EndpointError(ValueError):
    """A --service-endpoint value Kindling refuses to start with."""


def env_name(service: str) -> str:
    """The SDKs' variable for a client name: ``s3`` -> ``AWS_ENDPOINT_URL_S3``; ``*`` -> ``AWS_ENDPOINT_URL``."""
    if service == GENERIC:
        return "AWS_ENDPOINT_URL"
    from botocore import utils

    name = utils.SERVICE_NAME_ALIASES.get(service, service)
    hyphenized = utils.CLIENT_NAME_TO_HYPHENIZED_SERVICE_ID_OVERRIDES.get(name, name)
    return "AWS_ENDPOINT_URL_" + hyphenized.replace("-", "_").replace(" ", "_").upper()


@cache
def known_services() -> frozenset[str]:
    """Client names botocore knows (boto3.client(name))."""
    from botocore import loaders, utils

    names = loaders.create_loader().list_available_services("service-2")
    return frozenset(names) | frozenset(utils.SERVICE_NAME_ALIASES)


def parse(spec: str | Iterable[str]) -> dict[str, str]:
    """``"s3=http://127.0.0.1:5000,sqs=http://..."`` (or several such strings) -> {"s3": url, ...}; raises
    EndpointError with a message for the operator on anything malformed, unknown or served by Kindling."""
    items = [spec] if isinstance(spec, str) else list(spec)
    if sum(len(i) for i in items) > MAX_SPEC:
        raise EndpointError(f"--service-endpoint: more than {MAX_SPEC} characters")
    out: dict[str, str] = {}
    for item in items:
        for entry in item.split(","):
            entry = entry.strip()
            if not entry:
                continue
            service, sep, url = entry.partition("=")
            service, url = service.strip(), url.strip()
            shown = _shown(service)
            if not sep or not service:
                raise EndpointError(f"--service-endpoint {_shown(entry)!r}: expected SERVICE=URL, e.g. "
                                    "s3=http://127.0.0.1:5000")
            if service != GENERIC and (not _SERVICE.fullmatch(service) or service not in known_services()):
                raise EndpointError(f"--service-endpoint: unknown service {shown!r}; use the client name the AWS "
                                    "SDKs use, e.g. s3, dynamodb, sqs, sns, secretsmanager (or * for every service)")
            if service in SERVED:
                raise EndpointError(f"--service-endpoint: Kindling serves {service} itself; environments already "
                                    "call Kindling for it")
            if service in out:
                raise EndpointError(f"--service-endpoint: {shown} is given twice")
            out[service] = check_url(url, service)
            if len(out) > MAX_ENDPOINTS:
                raise EndpointError(f"--service-endpoint: more than {MAX_ENDPOINTS} services")
    _loopback_ports(out)  # conflicts are refused now, not when an environment starts
    return out


def check_url(url: str, service: str = "") -> str:
    """An http(s) URL with a host, and nothing an SDK would choke on or a log would leak; returned normalized."""
    what = f"--service-endpoint {_shown(service)}" if service else "--service-endpoint"
    if len(url) > MAX_URL:
        raise EndpointError(f"{what}: the URL is longer than {MAX_URL} characters")
    if not url.isprintable() or not url.isascii() or any(c.isspace() for c in url):
        raise EndpointError(f"{what}: the URL has spaces, control or non-ASCII characters")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise EndpointError(f"{what}: {_shown(url)!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise EndpointError(f"{what}: {_shown(url)!r} must start with http:// or https://")
    if not parts.hostname:
        raise EndpointError(f"{what}: {_shown(url)!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise EndpointError(f"{what}: the URL must not carry credentials (user:password@)")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise EndpointError(f"{what}: the URL must not have a query or fragment")
    if port == 0:
        raise EndpointError(f"{what}: port 0")
    if ":" in parts.hostname and _loopback(parts.hostname):
        raise EndpointError(f"{what}: an IPv6 loopback address cannot be forwarded into environments; use 127.0.0.1")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc.lower(), parts.path.rstrip("/"), "", ""))


def _shown(text: str) -> str:
    """A value as an error message may show it: short, printable."""
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= 80 else text[:77] + "..."


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _port(parts: urllib.parse.SplitResult) -> int:
    return parts.port or (443 if parts.scheme == "https" else 80)


def _loopback_ports(endpoints: Mapping[str, str]) -> dict[int, tuple[str, int]]:
    """{port inside: (host address, port)} for the endpoints on the host's loopback."""
    ports: dict[int, tuple[str, int]] = {}
    for service, url in endpoints.items():
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        if not _loopback(host):
            continue
        target = ("127.0.0.1" if host == "localhost" else host, _port(parts))
        if target[1] == KINDLING_API_PORT:
            raise EndpointError(f"--service-endpoint {_shown(service)}: port {KINDLING_API_PORT} on the host's "
                                f"loopback would be {KINDLING_ADDRESS}:{KINDLING_API_PORT} inside environments, "
                                "which is Kindling's API; give the service another port")
        if ports.get(target[1], target) != target:
            raise EndpointError(f"--service-endpoint {_shown(service)}: port {target[1]} is already given to "
                                f"{ports[target[1]][0]}; endpoints on the host's loopback need distinct ports")
        ports[target[1]] = target
    return ports


def exposed_ports(endpoints: Mapping[str, str]) -> dict[int, tuple[str, int]]:
    """The operator's loopback endpoints, as kindling.network.exposed_ports adds them."""
    return _loopback_ports(endpoints)


def kindling_url(host: str, port: int, isolated: bool) -> str:
    """Kindling's API as an environment reaches it."""
    if isolated:
        return f"http://{KINDLING_ADDRESS}" if KINDLING_API_PORT == 80 else f"http://{KINDLING_ADDRESS}:{KINDLING_API_PORT}"
    target = "127.0.0.1" if host in ("0.0.0.0", "::", "localhost", "") else host
    if ":" in target:
        target = f"[{target}]"
    return f"http://{target}:{port}"


def seen_from_inside(url: str) -> str:
    """An operator endpoint as an isolated environment reaches it: loopback becomes KINDLING_ADDRESS:PORT."""
    parts = urllib.parse.urlsplit(url)
    if not _loopback(parts.hostname or ""):
        return url
    netloc = f"{KINDLING_ADDRESS}:{_port(parts)}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def environment(endpoints: Mapping[str, str], host: str, port: int, isolated: bool) -> dict[str, str]:
    """The AWS_ENDPOINT_URL* variables of every environment (a function's own variables win: ``yield_to``)."""
    kindling = kindling_url(host, port, isolated)
    env = {env_name(s): kindling for s in SERVED}
    for service, url in endpoints.items():
        env[env_name(service)] = seen_from_inside(url) if isolated else url
    return env


def yield_to(env: dict[str, str], own: Mapping[str, str]) -> None:
    """A function that sets AWS_ENDPOINT_URL itself means every service: drop the service variables Kindling
    set (they would win over it in the SDKs) unless the function set them too. ``env`` already holds ``own``."""
    if "AWS_ENDPOINT_URL" not in own:
        return
    for name in [n for n in env if n.startswith("AWS_ENDPOINT_URL_") and n not in own]:
        del env[name]
