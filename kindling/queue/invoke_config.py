"""Event invoke configs (retries, event age, destinations) and recursion configs: the API and what enqueue reads.

Put/Get/Update/Delete/ListFunctionEventInvokeConfig(s) and Put/GetFunctionRecursionConfig, with Lambda's
checks and messages. Enqueue reads a qualifier's config on every async invoke, so configs are cached here
(this process is the only writer of the embedded store).
"""

from __future__ import annotations

from typing import Any

from kindling import errors
from kindling.functions.service import FunctionService
from kindling.queue.envelope import DEFAULT_MAX_AGE, DEFAULT_MAX_RETRIES, Policy
from kindling.store.event_invoke_configs import EventInvokeConfigRecord, EventInvokeConfigStore
from kindling.store.functions import LATEST

DESTINATION_SERVICES = {"lambda", "sqs", "sns", "events", "s3"}  # what Lambda accepts; Kindling delivers the first two
NO_FUNCTION = "The function doesn't exist."
RETRIES, AGE, DESTINATIONS = "MaximumRetryAttempts", "MaximumEventAgeInSeconds", "DestinationConfig"
_MISSING = object()


class EventInvokeConfigs:
    def __init__(self, functions: FunctionService, store: EventInvokeConfigStore) -> None:
        self.functions = functions
        self.store = store
        self._configs: dict[tuple[str, str], EventInvokeConfigRecord | None] = {}
        self._loops: dict[str, str] = store.recursive_loops()

    # -- what enqueue and invoke read ---------------------------------------------------------------
    def _cached(self, name: str, qualifier: str) -> EventInvokeConfigRecord | None:
        rec = self._configs.get((name, qualifier), _MISSING)
        if rec is _MISSING:
            rec = self._configs[(name, qualifier)] = self.store.get(name, qualifier)
        return rec  # type: ignore[return-value]

    def policy(self, name: str, qualifier: str | None, dead_letter: str | None) -> Policy:
        """The retry policy and destinations an event of ``name:qualifier`` is queued with."""
        rec = self._cached(name, qualifier or LATEST)
        config = rec.config if rec is not None else {}
        dest = config.get(DESTINATIONS) or {}
        return Policy(max_retries=config.get(RETRIES, DEFAULT_MAX_RETRIES), max_age=config.get(AGE, DEFAULT_MAX_AGE),
                      on_success=(dest.get("OnSuccess") or {}).get("Destination") or None,
                      on_failure=(dest.get("OnFailure") or {}).get("Destination") or None,
                      dead_letter=dead_letter or None)

    def recursive_loop(self, name: str) -> str:
        return self._loops.get(name, "Terminate")

    def function_changed(self, name: str) -> None:
        """Forget cached configs of a function that was deleted (its rows went with it)."""
        if self.functions.store.get(name) is None:
            self._configs = {k: v for k, v in self._configs.items() if k[0] != name}
            self._loops.pop(name, None)

    # -- event invoke config operations -------------------------------------------------------------
    def _target(self, p: dict[str, Any]) -> tuple[str, str]:
        name, qualifier = self.functions.resolve(p["FunctionName"], p.get("Qualifier"))
        return name, qualifier or LATEST

    def _must_exist(self, name: str, qualifier: str) -> None:
        if self.functions.lookup(name, qualifier) is None:
            raise errors.ResourceNotFoundException(NO_FUNCTION)

    def _no_config(self, name: str, qualifier: str) -> errors.LambdaError:
        return errors.ResourceNotFoundException(
            f"The function {self.functions.arn(name, qualifier)} doesn't have an EventInvokeConfig")

    def _render(self, rec: EventInvokeConfigRecord) -> dict[str, Any]:
        out: dict[str, Any] = {"FunctionArn": self.functions.arn(rec.function_name, rec.qualifier),
                               "LastModified": rec.last_modified}
        out.update({k: rec.config[k] for k in (RETRIES, AGE) if k in rec.config})
        dest = rec.config.get(DESTINATIONS) or {}
        out[DESTINATIONS] = {"OnSuccess": dict(dest.get("OnSuccess") or {}),
                             "OnFailure": dict(dest.get("OnFailure") or {})}
        return out

    def _save(self, name: str, qualifier: str, config: dict[str, Any]) -> dict[str, Any]:
        rec = self.store.put(name, qualifier, config)
        self._configs[(name, qualifier)] = rec
        return self._render(rec)

    def put(self, p: dict[str, Any]) -> dict[str, Any]:
        name, qualifier = self._target(p)
        self._must_exist(name, qualifier)
        if not any(k in p for k in (RETRIES, AGE, DESTINATIONS)):
            raise errors.InvalidParameterValueException(
                "You must specify at least one of error handling or destination setting.")
        config = {k: p[k] for k in (RETRIES, AGE) if k in p}
        config[DESTINATIONS] = self._destinations(name, p.get(DESTINATIONS) or {})
        return self._save(name, qualifier, config)

    def update(self, p: dict[str, Any]) -> dict[str, Any]:
        name, qualifier = self._target(p)
        self._must_exist(name, qualifier)
        rec = self._cached(name, qualifier)
        if rec is None:
            raise self._no_config(name, qualifier)
        config = {**rec.config, **{k: p[k] for k in (RETRIES, AGE) if k in p}}
        if DESTINATIONS in p:
            given = self._destinations(name, p[DESTINATIONS] or {})
            config[DESTINATIONS] = {**(rec.config.get(DESTINATIONS) or {}),
                                    **{k: v for k, v in given.items() if k in (p[DESTINATIONS] or {})}}
        return self._save(name, qualifier, config)

    def get(self, p: dict[str, Any]) -> dict[str, Any]:
        name, qualifier = self._target(p)
        rec = self._cached(name, qualifier)
        if rec is None:
            raise self._no_config(name, qualifier)
        return self._render(rec)

    def delete(self, p: dict[str, Any]) -> dict[str, Any]:
        name, qualifier = self._target(p)
        if not self.store.delete(name, qualifier):
            raise self._no_config(name, qualifier)
        self._configs.pop((name, qualifier), None)
        return {}

    def list(self, p: dict[str, Any]) -> dict[str, Any]:
        name, _ = self.functions.resolve(p["FunctionName"])
        if self.functions.store.get(name) is None:
            raise errors.ResourceNotFoundException(NO_FUNCTION)
        records = self.store.list(name)
        marker = str(p.get("Marker") or "")
        start = int(marker) if marker.isascii() and marker.isdigit() and len(marker) < 19 else 0
        limit = int(p.get("MaxItems") or 50)
        out: dict[str, Any] = {"FunctionEventInvokeConfigs": [self._render(r) for r in records[start:start + limit]]}
        if start + limit < len(records):
            out["NextMarker"] = str(start + limit)
        return out

    def _destinations(self, name: str, given: dict[str, Any]) -> dict[str, Any]:
        """DestinationConfig as stored, after Lambda's checks of each destination."""
        out: dict[str, Any] = {}
        for when in ("OnSuccess", "OnFailure"):
            arn = (given.get(when) or {}).get("Destination")
            out[when] = {"Destination": arn} if arn else {}
            if not arn:
                continue
            parts = arn.split(":")
            service = parts[2] if len(parts) > 5 and parts[0] == "arn" else ""
            if service not in DESTINATION_SERVICES:
                raise errors.InvalidParameterValueException(
                    f"The provided destination config {_java_config(given)} is invalid.")
            if service == "lambda":
                self._check_function_destination(name, arn)
        return out

    def _check_function_destination(self, name: str, arn: str) -> None:
        invalid = errors.InvalidParameterValueException(f"The destination ARN {arn} is invalid.")
        try:
            target, qualifier = self.functions.resolve(arn)
        except errors.LambdaError:
            raise invalid from None
        if target == name:
            raise errors.InvalidParameterValueException("You can't specify the function as a destination for itself.")
        if self.functions.lookup(target, qualifier) is None:
            raise invalid

    # -- recursion config operations ----------------------------------------------------------------
    def _function(self, ident: str) -> str:
        name, _ = self.functions.resolve(ident)
        if self.functions.store.get(name) is None:
            raise errors.ResourceNotFoundException(f"Function not found: {self.functions.arn(name)}")
        return name

    def put_recursion(self, p: dict[str, Any]) -> dict[str, Any]:
        name = self._function(p["FunctionName"])
        self.store.put_recursive_loop(name, p["RecursiveLoop"])
        self._loops[name] = p["RecursiveLoop"]
        return {"RecursiveLoop": p["RecursiveLoop"]}

    def get_recursion(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"RecursiveLoop": self.recursive_loop(self._function(p["FunctionName"]))}


def _java_config(given: dict[str, Any]) -> str:
    """DestinationConfig as Lambda's Java service prints it in its error message."""
    def one(when: str) -> str:
        if when not in given or given[when] is None:
            return "null"
        return f"{when}(destination={(given[when] or {}).get('Destination') or 'null'})"
    return f"DestinationConfig(onSuccess={one('OnSuccess')}, onFailure={one('OnFailure')})"
