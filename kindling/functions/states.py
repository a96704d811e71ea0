"""A version's State and LastUpdateStatus, as Lambda shows them in its configuration.

CreateFunction and PublishVersion leave a version ``Pending`` (being created); UpdateFunctionCode and
UpdateFunctionConfiguration leave $LATEST ``InProgress``. Either ends ``Active``/``Successful`` or ``Failed`` with a
reason (kindling/functions/updates.py does that). The reasons are AWS's own wording, as recorded.
"""

from __future__ import annotations

from typing import Any

CREATING = "The function is being created."
_STATE_REASON = ("StateReason", "StateReasonCode")
_UPDATE_REASON = ("LastUpdateStatusReason", "LastUpdateStatusReasonCode")


def pending(config: dict[str, Any]) -> dict[str, Any]:
    """Being created: State Pending and no LastUpdateStatus yet."""
    out = {k: v for k, v in config.items() if k not in ("LastUpdateStatus", *_UPDATE_REASON)}
    out.update(State="Pending", StateReason=CREATING, StateReasonCode="Creating")
    return out


def in_progress(config: dict[str, Any]) -> dict[str, Any]:
    """Being updated: the function stays Active (invokes run its last successful configuration meanwhile)."""
    out = {k: v for k, v in config.items() if k not in _STATE_REASON}
    out.update(LastUpdateStatus="InProgress", LastUpdateStatusReason=CREATING, LastUpdateStatusReasonCode="Creating")
    return out


def succeeded(config: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in config.items() if k not in (*_STATE_REASON, *_UPDATE_REASON)}
    out.update(State="Active", LastUpdateStatus="Successful")
    return out


def failed(config: dict[str, Any], reason: str, code: str) -> dict[str, Any]:
    """A creation that failed leaves the function Failed; an update that failed leaves it Active (running its last
    successful configuration) with LastUpdateStatus Failed."""
    out = {k: v for k, v in config.items() if k not in (*_STATE_REASON, *_UPDATE_REASON)}
    if config.get("State") == "Pending":
        out.update(State="Failed", StateReason=reason, StateReasonCode=code)
    out.update(LastUpdateStatus="Failed", LastUpdateStatusReason=reason, LastUpdateStatusReasonCode=code)
    return out


def busy(config: dict[str, Any]) -> bool:
    """Whether a creation or update of this version is still under way."""
    return config.get("State") == "Pending" or config.get("LastUpdateStatus") == "InProgress"


def settled(config: dict[str, Any]) -> bool:
    """Whether this configuration is the one invokes run (not under way, not failed)."""
    return config.get("State") == "Active" and config.get("LastUpdateStatus") == "Successful"
