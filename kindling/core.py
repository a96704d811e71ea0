"""Kindling assembled from its parts for one data dir: the object the frontend talks to."""

from __future__ import annotations

import hashlib
import hmac
import os

from kindling import credentials, datadir
from kindling.frontend import presign
from kindling.functions import images
from kindling.functions.aliases import AliasService
from kindling.functions.concurrency import ConcurrencyService
from kindling.functions.permissions import Permissions
from kindling.functions.provisioned import ProvisionedService
from kindling.functions.service import FunctionService
from kindling.iam.service import IAM
from kindling.invoke.service import RUNTIME_DIR, InvokeService, base_environment
from kindling.network import endpoints, exposed_ports
from kindling.observability import metrics, tracing
from kindling.observability.log_limits import LogLimits
from kindling.observability.logs import LogStore
from kindling.observability.logs_service import LogsService
from kindling.queue.service import EventQueue
from kindling.runtimes import layout, system_root
from kindling.runtimes.registry import PYTHONS, Runtimes
from kindling.sandbox import make_backend
from kindling.sandbox.environment import ExecutionEnvironment
from kindling.sandbox.isolated import remove_leftovers
from kindling.scheduler.limits import Counter
from kindling.scheduler.pool import Scheduler
from kindling.settings import Settings
from kindling.store import code_volume
from kindling.store.code import CodeStore
from kindling.store.concurrency import ConcurrencyStore
from kindling.store.db import open_engine
from kindling.store.functions import FunctionStore
from kindling.store.permissions import PermissionStore
from kindling.store.provisioned import ProvisionedStore


class Kindling:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        data = settings.data_path
        try:  # refused before anything starts
            self.service_endpoints = endpoints.parse(settings.service_endpoints)
        except endpoints.EndpointError as exc:
            raise SystemExit(str(exc)) from None
        runtimes = Runtimes(settings.runtimes)
        runtimes.precompile()  # before the umask: environments read the bootstrap's code cache
        datadir.make_private(data)  # umask 077 from here on, and an older data dir tightened
        self.engine = open_engine(data)
        if settings.sandbox != "process" and os.geteuid() == 0:
            remove_leftovers(data)  # first: what a killed Kindling left running still holds its mount of the code
            code_volume.mount(data)  # binds of code into environments show no host path
        self.code = CodeStore(data / "code")
        self.code.make_private(settings.sandbox_gid if os.geteuid() == 0 else None)
        self.logs = LogStore(data / "logs", settings.log_retention_days,
                             LogLimits.from_mb(settings.log_rate_mb, settings.log_burst_mb, settings.log_group_max_mb))
        self.logs_service = LogsService(self.logs, settings.region, settings.account_id)  # the CloudWatch Logs API
        self.url_secret = presign.load_secret(data)
        # the key pair API requests must be signed with; created_credentials: made just now, show it once
        self.credentials, self.created_credentials = credentials.load(settings)
        # roles, policies, role sessions (the execution role's credentials in every environment)
        self.iam = IAM(self.engine, settings.account_id, hmac.new(self.url_secret, b"iam-sessions", hashlib.sha256)
                       .digest(), settings.iam)
        ExecutionEnvironment.credentials = self.iam
        self.functions = FunctionService(settings, FunctionStore(self.engine), self.code, runtimes)
        self.aliases = AliasService(self.functions)
        # resource-based policies (AddPermission...): a deleted version or alias takes its policy with it
        self.permissions = Permissions(self.functions, PermissionStore(self.engine), self.iam)
        self.functions.version_listeners.append(self.permissions.version_changed)
        self.aliases.listeners.append(self.permissions.alias_changed)
        self.backend = make_backend(settings.sandbox, data, RUNTIME_DIR, runtimes.prefixes(), settings.sandbox_uid,
                                    settings.sandbox_gid, settings.sandbox_pool, settings.network,
                                    exposed_ports(settings.host, settings.port, self.service_endpoints),
                                    lambda: system_root.build(self.code.root))  # custom runtimes' root
        counter = Counter(settings.concurrency_limit)
        # AWS_ENDPOINT_URL_<SERVICE>: the SDKs inside functions call Kindling, and the operator's endpoints
        environ = base_environment(settings.region) | endpoints.environment(
            self.service_endpoints, settings.host, settings.port, self.backend.name != "process")
        self.scheduler = Scheduler(self.logs, environ, settings.keep_alive, self.backend,
                                   counter, settings.memory_budget_mb, settings.templates)
        self.concurrency = ConcurrencyService(self.functions, ConcurrencyStore(self.engine), counter)
        self.functions.listeners.insert(0, self.functions.store.invalidate)  # before anyone reads it again
        self.functions.version_listeners.append(self.scheduler.function_changed)
        self.functions.listeners.append(self._forget_deleted)
        self.invoker = InvokeService(self.functions, self.scheduler)
        # provisioned concurrency: stored configs, environments kept initialized per version
        self.provisioned = ProvisionedService(self.functions, ProvisionedStore(self.engine), self.scheduler,
                                              self.invoker._version)
        self.functions.version_listeners.append(self.provisioned.version_changed)
        self.aliases.listeners.append(self.provisioned.alias_changed)
        # asynchronous invocation: durable queue, dispatcher, destinations (events.metrics: the async counters)
        self.events = self.invoker.events = EventQueue(settings, self.engine, self.functions, self.invoker, counter)
        metrics.watch(counter, self.events.metrics)  # ConcurrentExecutions and the async counters, read at /metrics

    def _forget_deleted(self, name: str) -> None:
        if self.functions.store.get(name) is None:
            self.concurrency.function_deleted(name)

    def code_path(self, key: str) -> str:
        return presign.sign(self.url_secret, f"/_kindling/code/{key}.zip")

    def _start_zygotes(self) -> None:
        """A zygote per Python runtime here, so even a function's first cold start is a fork."""
        runtimes = self.functions.runtimes
        empty = self.code.root / ".empty"  # on the code store's own filesystem: its bind shows no host path
        empty.mkdir(exist_ok=True)
        empty.chmod(0o755)  # the zygote's task root: its runtime, an unprivileged user, starts in it
        found = [r for r in PYTHONS if runtimes.available(r)]
        lang_dir = self.backend.lang_dir
        argv = {r: runtimes.command(r, "/var/task", self.backend.runtime_dir, lang_dir) for r in found}
        where = {r: layout.spec(r, runtimes.lang(r) if lang_dir else None, None) for r in found}
        self.scheduler.templates.start_zygotes(argv, str(empty), str(self.code.root), where)

    async def start(self) -> None:
        tracing.configure(self.settings.otlp_endpoint)
        self.functions.code_worker.start()
        self.logs.start()  # retention
        self.scheduler.start()
        self._start_zygotes()
        self.functions.updates.resume()  # creations and updates a stopped Kindling left under way finish now
        self.provisioned.start()  # stored configs provision in the background
        await self.events.start()

    async def stop(self) -> None:
        await images.stop(self.functions)
        await self.events.stop()
        await self.provisioned.stop()
        await self.functions.updates.stop()
        await self.scheduler.stop()
        self.backend.close()
        self.functions.code_worker.close()
        self.logs.stop()
        tracing.shutdown()
        self.engine.dispose()
