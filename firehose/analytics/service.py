"""SQL applications' lifecycle: what each Kinesis Analytics operation does to an account's applications,
and the ``Runtime`` that runs them.

Statuses and transitions (analytics.md §2):

    create ──> READY ──start──> STARTING ──> RUNNING ──stop──> STOPPING ──> READY
               READY | RUNNING ──configuration change──> (UPDATING while a running one is reconfigured)
               READY ──delete──> gone;  RUNNING ──delete──> DELETING ──> gone

StartApplication is accepted only from READY, StopApplication only from
RUNNING, configuration changes and DeleteApplication only from READY or
RUNNING; anything else is ResourceInUseException. Every state change is
persisted (``store.py``) before the runtime is asked to act, so that a crash
leaves a state a restart can finish: an application persisted STARTING or
RUNNING is started again with LAST_STOPPED_POINT for each input, one
persisted STOPPING becomes READY, one persisted DELETING is deleted.

The daemon hands in the ``Runtime`` (the engine that reads inputs and runs
the SQL); without one, StartApplication and DiscoverInputSchema answer
UnsupportedOperationException and applications can still be configured.

Error messages for Kinesis Analytics are not quoted in AWS's public
documentation; those here follow the Firehose API's wording *(our choice)*.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, Protocol

import orjson

from firehose.accounts import PerAccount, account_directory, stored_accounts
from firehose.analytics import applications as apps
from firehose.analytics.applications import Application, Body, application_arn
from firehose.analytics.codecheck import check_code
from firehose.analytics.errors import (
    FirehoseError,
    InvalidApplicationConfigurationException,
    InvalidArgumentException,
    LimitExceededException,
    ResourceInUseException,
    ResourceNotFoundException,
    UnsupportedOperationException,
)
from firehose.analytics.store import ApplicationStore
from firehose.clock import now_ms
from firehose.errors import ConfigError
from firehose.settings import ACCOUNT_MEMBER

log = logging.getLogger("firehose.analytics")

#: Applications per account (limits.md: 50 per region; this daemon serves one region).
MAX_APPLICATIONS = 50
#: Statuses in which the configuration may change and the application may be deleted.
_CHANGEABLE = ("READY", "RUNNING")
#: Not an AWS member: a declared application with it is started when loaded, each input from this position.
START_MEMBER = "InputStartingPosition"


class Runtime(Protocol):
    """What runs applications (``firehose.analytics.runtime``); the daemon constructs it.

    ``detail`` is the application's ``ApplicationDetail`` (DescribeApplication's shape);
    ``positions`` maps each InputId to NOW, TRIM_HORIZON or LAST_STOPPED_POINT."""

    def start(self, account: str, detail: dict[str, Any], positions: dict[str, str]) -> None: ...

    async def stop(self, account: str, name: str) -> None:
        """Stops the application, leaving a LAST_STOPPED_POINT checkpoint."""

    def update(self, account: str, detail: dict[str, Any]) -> None:
        """A running application's configuration changed (reference data reload, outputs, code)."""

    async def discover(self, account: str, body: dict[str, Any]) -> dict[str, Any]:
        """DiscoverInputSchema's answer for ``body`` (a DiscoverInputSchema request)."""

    def forget(self, account: str, name: str) -> None:
        """DeleteApplication: drop the application's checkpoints."""


ChildKind = Literal["inputs", "outputs", "references", "logging"]


class Applications:
    """One account's applications: what the API's operations call (the services of the front door)."""

    def __init__(self, store: ApplicationStore, *, account: str, region: str,
                 runtime: Callable[[], Runtime | None], spawn: Callable[[Any], asyncio.Task[Any]]) -> None:
        """``runtime`` gives the runtime (the one the daemon holds now); ``spawn`` runs a background task."""
        self.store = store
        self.account = account
        self.region = region
        self._runtime = runtime
        self._spawn = spawn

    @property
    def runtime(self) -> Runtime | None:
        return self._runtime()

    def arn(self, name: str) -> str:
        return application_arn(self.region, self.account, name)

    def get(self, name: str) -> Application:
        app = self.store.applications.get(name)
        if app is None:
            raise ResourceNotFoundException(f"Application {name} under account {self.account} not found.")
        return app

    def detail(self, app: Application) -> Body:
        return app.detail(self.arn(app.name))

    # -- create, describe, list

    def create(self, body: Body, *, origin: str = "api", config_digest: str = "") -> Application:
        name = body["ApplicationName"]
        if name in self.store.applications:
            raise ResourceInUseException(f"Application {name} under account {self.account} already exists.")
        if len(self.store) >= MAX_APPLICATIONS:
            raise LimitExceededException(
                f"You have already consumed your limit of {MAX_APPLICATIONS} applications in this account.")
        app = apps.new_application(body, now_ms())
        check_code(app)
        app.origin, app.config_digest = origin, config_digest
        self.store.applications[name] = app
        self._save()
        return app

    def page(self, limit: int | None, start: str | None) -> Body:
        names = self.store.names()
        if start:
            names = [n for n in names if n > start]
        limit = limit or 50
        return {"ApplicationSummaries": [self.store.applications[n].summary(self.arn(n)) for n in names[:limit]],
                "HasMoreApplications": len(names) > limit}

    # -- configuration changes

    def change(self, name: str, version: int, edit: Callable[[Application, apps.Change], None], *,
               check_sql: bool = False) -> Application:
        """Apply ``edit`` to a copy of the application at ``version``, check it, and make it current:
        version + 1, persisted, then handed to the runtime when the application runs."""
        app = self.get(name)
        if app.status not in _CHANGEABLE:
            raise ResourceInUseException(f"Application {name} is {app.status}; its configuration can change only "
                                         "when it is READY or RUNNING.")
        app.check_version(version)
        new = copy.deepcopy(app)
        change = apps.Change(new)
        edit(new, change)
        apps.check_limits(new)
        if check_sql:
            check_code(new)
        new.version = change.version
        new.updated_ms = now_ms()
        self.store.applications[name] = new
        self._save()
        if new.status == "RUNNING" and self.runtime is not None:
            self._reconfigure(new)
        return new

    def _reconfigure(self, app: Application) -> None:
        """The runtime takes a running application's new configuration; UPDATING meanwhile."""
        assert self.runtime is not None
        app.status = "UPDATING"
        try:
            self.runtime.update(self.account, self.detail(app))
        except Exception:
            log.exception("The runtime could not apply a running application's new configuration.",
                          extra={"application": app.name, "account": self.account})
        finally:
            app.status = "RUNNING"

    # -- lifecycle

    def start(self, name: str, configurations: list[Body]) -> None:
        app = self.get(name)
        if app.status != "READY":
            raise ResourceInUseException(f"Application {name} is {app.status}; it can be started only when it is "
                                         "READY.")
        runtime = self._require_runtime("StartApplication")
        if not app.inputs:
            raise InvalidApplicationConfigurationException(
                f"Application {name} has no input to read; add one with AddApplicationInput first.")
        positions = self._positions(app, configurations)
        app.positions = positions
        app.status = "STARTING"
        self._save()
        self._run(runtime, app, positions)

    def _positions(self, app: Application, configurations: list[Body]) -> dict[str, str]:
        positions: dict[str, str] = {}
        for config in configurations:
            input_id = config["Id"]
            try:
                source = app.child("inputs", input_id)
            except ResourceNotFoundException:
                raise InvalidArgumentException(f"Input id {input_id} not found in application {app.name}.") from None
            position = (config.get("InputStartingPositionConfiguration") or {}).get("InputStartingPosition") or "NOW"
            if position == "TRIM_HORIZON" and source.get("KinesisFirehoseInput"):
                raise InvalidArgumentException(
                    f"Input {input_id} of application {app.name} reads a Firehose delivery stream: TRIM_HORIZON is "
                    "not a valid starting position for it (use NOW or LAST_STOPPED_POINT).")
            positions[input_id] = position
        missing = [i["InputId"] for i in app.inputs if i["InputId"] not in positions]
        if missing:
            raise InvalidArgumentException(f"InputConfigurations must give a starting position for input "
                                           f"{missing[0]} of application {app.name}.")
        return positions

    def _run(self, runtime: Runtime, app: Application, positions: dict[str, str]) -> None:
        """STARTING (persisted) → the runtime starts it → RUNNING (persisted); READY again if it cannot."""
        try:
            runtime.start(self.account, self.detail(app), positions)
        except FirehoseError:
            app.status = "READY"
            self._save()
            raise
        except Exception as exc:
            log.exception("An application could not be started.", extra={"application": app.name})
            app.status = "READY"
            self._save()
            raise InvalidApplicationConfigurationException(
                f"Application {app.name} could not be started: {exc}") from None
        app.status = "RUNNING"
        self._save()
        log.info("Started an application.", extra={"application": app.name, "account": self.account,
                                                   "positions": positions})

    def stop(self, name: str) -> None:
        app = self.get(name)
        if app.status != "RUNNING":
            raise ResourceInUseException(f"Application {name} is {app.status}; it can be stopped only when it is "
                                         "RUNNING.")
        app.status = "STOPPING"
        self._save()
        self._spawn(self._stop(app))

    async def _stop(self, app: Application) -> None:
        await self._halt(app)
        if self.store.applications.get(app.name) is app:
            app.status = "READY"
            self._save()
            log.info("Stopped an application.", extra={"application": app.name, "account": self.account})

    async def _halt(self, app: Application) -> None:
        if self.runtime is None:
            return
        try:
            await self.runtime.stop(self.account, app.name)
        except Exception:
            log.exception("The runtime failed to stop an application.", extra={"application": app.name})

    def delete(self, name: str, create_timestamp: float) -> None:
        app = self.get(name)
        if round(create_timestamp * 1000) != app.created_ms:
            # AWS does not document the error for a CreateTimestamp that is not the application's; the
            # application so named does not exist (it may be another of the same name) *(our choice)*.
            raise ResourceNotFoundException(
                f"Application {name} created at {create_timestamp} not found under account {self.account} (it "
                f"was created at {app.created_ms / 1000}; DescribeApplication gives CreateTimestamp).")
        if app.status not in _CHANGEABLE:
            raise ResourceInUseException(f"Application {name} is {app.status}; it can be deleted only when it is "
                                         "READY or RUNNING.")
        if app.status == "RUNNING":
            app.status = "DELETING"
            self._save()
            self._spawn(self._finish_delete(app))
        else:
            self._remove(app)

    async def _finish_delete(self, app: Application) -> None:
        await self._halt(app)
        self._remove(app)

    def _remove(self, app: Application) -> None:
        if self.store.applications.get(app.name) is app:
            del self.store.applications[app.name]
            self._save()
        if self.runtime is not None:
            try:
                self.runtime.forget(self.account, app.name)
            except Exception:
                log.exception("The runtime failed to drop a deleted application's checkpoints.",
                              extra={"application": app.name})
        log.info("Deleted an application.", extra={"application": app.name, "account": self.account})

    def resume(self) -> None:
        """After a restart: finish what a stop left (see the module docstring)."""
        for app in list(self.store.applications.values()):
            if app.status in ("STARTING", "RUNNING", "UPDATING"):
                if self.runtime is None:
                    log.warning("An application was running when the daemon stopped, but this daemon has no "
                                "runtime for SQL applications; it is READY now.", extra={"application": app.name})
                    app.status = "READY"
                    self._save()
                    continue
                app.status = "STARTING"
                positions = app.positions = {i["InputId"]: "LAST_STOPPED_POINT" for i in app.inputs}
                try:
                    self._run(self.runtime, app, positions)
                except FirehoseError as exc:
                    log.error("An application that was running could not be started again; it is READY.",
                              extra={"application": app.name, "error": exc.message})
            elif app.status == "STOPPING":
                app.status = "READY"
                self._save()
            elif app.status == "DELETING":
                self._remove(app)

    async def halt_all(self) -> None:
        """Daemon shutdown: the runtime stops every running application (each leaves its checkpoint); their
        status stays RUNNING, so the next start resumes them."""
        running = [a for a in self.store.applications.values() if a.status in ("RUNNING", "UPDATING")]
        await asyncio.gather(*(self._halt(a) for a in running))

    # -- tags

    def by_arn(self, arn: str) -> Application:
        prefix = application_arn(self.region, self.account, "")
        if not arn.startswith(prefix):
            raise ResourceNotFoundException(f"Application {arn} not found.")
        return self.get(arn[len(prefix):])

    def tag(self, arn: str, tags: list[Body]) -> None:
        app = self.by_arn(arn)
        new = {**app.tags, **apps.tag_map(tags)}
        apps.check_tags(new, app.name)
        app.tags = new
        self._save()

    def untag(self, arn: str, keys: list[str]) -> None:
        app = self.by_arn(arn)
        app.tags = {k: v for k, v in app.tags.items() if k not in set(keys)}
        self._save()

    # -- discovery

    async def discover(self, body: Body) -> Body:
        stream = all(body.get(m) for m in ("ResourceARN", "RoleARN", "InputStartingPositionConfiguration"))
        if not stream and not body.get("S3Configuration"):
            raise InvalidArgumentException("DiscoverInputSchema needs either ResourceARN, RoleARN and "
                                           "InputStartingPositionConfiguration, or S3Configuration.")
        return await self._require_runtime("DiscoverInputSchema").discover(self.account, body)

    def _require_runtime(self, operation: str) -> Runtime:
        if self.runtime is None:
            raise UnsupportedOperationException(
                f"{operation} needs the SQL application runtime, which this daemon does not run.")
        return self.runtime

    # -- declared applications

    def apply_config(self, declared: list[Body]) -> None:
        """Make the config's applications of this account exist as declared (bodies already checked by
        ``check_declarations``): new ones created, changed ones reconfigured (a new version), those no longer
        declared deleted; those declaring ``InputStartingPosition`` started if READY."""
        names = set()
        for item in declared:
            body = _create_body(item)
            name = body["ApplicationName"]
            names.add(name)
            digest = declaration_digest(item)
            app = self.store.applications.get(name)
            if app is None:
                app = self.create(body, origin="config", config_digest=digest)
                log.info("Created an application declared in the config.", extra={"application": name})
            elif app.config_digest != digest and app.status in _CHANGEABLE:
                app = self._redeclare(app, body, digest)
                log.info("Applied a changed application declaration from the config.",
                         extra={"application": name, "version": app.version})
            position = item.get(START_MEMBER)
            if position and app.status == "READY" and app.inputs:
                if self.runtime is None:
                    log.warning("A declared application asks to be started, but this daemon has no runtime for "
                                "SQL applications.", extra={"application": name})
                    continue
                try:
                    self.start(name, [{"Id": i["InputId"], "InputStartingPositionConfiguration": {
                        "InputStartingPosition": position}} for i in app.inputs])
                except FirehoseError as exc:
                    log.error("A declared application could not be started.",
                              extra={"application": name, "error": exc.message})
        for app in list(self.store.applications.values()):
            if app.origin == "config" and app.name not in names and app.status in _CHANGEABLE:
                log.warning("An application is no longer declared in the config; deleting it.",
                            extra={"application": app.name})
                self.delete(app.name, app.created_ms / 1000)

    def _redeclare(self, app: Application, body: Body, digest: str) -> Application:
        def edit(new: Application, change: apps.Change) -> None:
            fresh = apps.new_application(body, new.created_ms)
            new.description, new.code, new.tags = fresh.description, fresh.code, fresh.tags
            new.inputs, new.outputs, new.references, new.logging = [], [], [], []
            for config in body.get("Inputs") or []:
                apps.add_input(new, config, change)
            for config in body.get("Outputs") or []:
                apps.add_output(new, config, change)
            for config in body.get("CloudWatchLoggingOptions") or []:
                apps.add_logging(new, config, change)
            new.positions = {}
            new.origin, new.config_digest = "config", digest

        return self.change(app.name, app.version, edit, check_sql=True)

    def _save(self) -> None:
        self.store.save()


def _create_body(item: Body) -> Body:
    """A declaration less the members that are not CreateApplication's."""
    return {k: v for k, v in item.items() if k not in (ACCOUNT_MEMBER, START_MEMBER)}


def declaration_digest(item: Body) -> str:
    return hashlib.sha256(orjson.dumps(_create_body(item), option=orjson.OPT_SORT_KEYS)).hexdigest()


def check_declarations(items: list[Body], source: str, validate: Callable[[Body], None]) -> None:
    """Every declared application as CreateApplication would take it (``validate``: the model's check),
    its configuration and its SQL; ConfigError naming the file and the application otherwise."""
    for i, item in enumerate(items):
        name = item.get("ApplicationName")
        where = f"{source}: analytics application {name!r}" if isinstance(name, str) else \
            f"{source}: analytics_applications[{i}]"
        position = item.get(START_MEMBER)
        if position is not None and position not in ("NOW", "TRIM_HORIZON", "LAST_STOPPED_POINT"):
            raise ConfigError(f"{where}: {START_MEMBER} must be NOW, TRIM_HORIZON or LAST_STOPPED_POINT")
        body = _create_body(item)
        try:
            validate(body)
            app = apps.new_application(body, 0)
            check_code(app)
            if position == "TRIM_HORIZON" and any(i.get("KinesisFirehoseInput") for i in app.inputs):
                raise InvalidArgumentException("TRIM_HORIZON is not a valid starting position for a Firehose "
                                               "delivery stream input.")
        except FirehoseError as exc:
            raise ConfigError(f"{where}: {exc.message}") from exc


class Analytics:
    """Every account's applications; made by the daemon, which hands ``for_caller`` to the front door."""

    def __init__(self, state_dir: Path, *, home: str, region: str, runtime: Runtime | None,
                 named: set[str] | frozenset[str] = frozenset()) -> None:
        self.state_dir = state_dir
        self.home = home
        self.region = region
        self.runtime = runtime
        self._tasks: set[asyncio.Task[Any]] = set()
        self.accounts: PerAccount[Applications] = PerAccount(home, self._make, named=named)

    def _make(self, account: str) -> Applications:
        store = ApplicationStore(account_directory(self.state_dir, account, self.home))
        return Applications(store, account=account, region=self.region, runtime=lambda: self.runtime,
                            spawn=self._spawn)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def for_caller(self, account: str) -> Applications:
        return self.accounts.for_caller(account)

    def __iter__(self) -> Iterator[tuple[str, Applications]]:
        return iter(self.accounts)

    def start(self, declared: dict[str, list[Body]]) -> None:
        """At daemon start: every stored account's applications resumed, then the declared ones applied."""
        for account in [*stored_accounts(self.state_dir), *declared]:
            self.accounts.get(account)
        for _account, applications in self.accounts:
            applications.resume()
        self.apply_config(declared)

    def apply_config(self, declared: dict[str, list[Body]]) -> None:
        for account in declared:
            self.accounts.get(account)
        for account, applications in self.accounts:
            applications.apply_config(declared.get(account, []))

    async def close(self) -> None:
        """Daemon shutdown: stops and deletes in flight finish, running applications halt (still RUNNING)."""
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await asyncio.gather(*(a.halt_all() for _account, a in self.accounts), return_exceptions=True)
