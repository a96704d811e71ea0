"""Which version an invoke runs: the one its qualifier names, or for an alias a weighted pick.

An alias with RoutingConfig.AdditionalVersionWeights {"2": 0.1} sends each invoke to version 2 with
probability 0.1 and to its FunctionVersion otherwise, independently per invoke (as Lambda does).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from kindling import arns, errors
from kindling.functions.service import FunctionService
from kindling.store.aliases import AliasRecord
from kindling.store.functions import LATEST, FunctionRecord


def pick(alias: AliasRecord, draw: Callable[[], float] = random.random) -> str:
    """The version one invoke of ``alias`` runs."""
    r = draw()
    for version, weight in alias.weights.items():
        if r < weight:
            return version
        r -= weight
    return str(alias.config["FunctionVersion"])


def target(functions: FunctionService, name: str, qualifier: str | None) -> FunctionRecord:
    """The version record an invoke of ``name[:qualifier]`` runs, or Lambda's not-found error."""
    version = qualifier or LATEST
    if arns.is_alias(version):
        alias = functions.aliases.get(name, version)
        if alias is not None:
            version = pick(alias)
    rec = functions.runnable(name, version)  # while an update is in progress: the last successful configuration
    if rec is None:
        raise errors.ResourceNotFoundException(f"Function not found: {functions.arn(name, qualifier or LATEST)}")
    return rec
