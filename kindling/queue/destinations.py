"""Where an async event goes when it is done: Lambda's invocation record to OnSuccess / OnFailure destinations,
the event itself to the function's dead-letter queue.

Targets: another Kindling function (an async invoke of it, so it is queued durably like any event) and SQS
queues, reached through the SQS-compatible endpoint Kindling is configured with (``--sqs-endpoint``). A record
that cannot be delivered is counted (DestinationDeliveryFailures, DeadLetterErrors) and logged, not retried
forever, as on Lambda.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from kindling.queue import recursion
from kindling.queue.envelope import Event
from kindling.queue.metrics import AsyncMetrics
from kindling.settings import Settings

if TYPE_CHECKING:
    from kindling.invoke.service import InvokeService

log = logging.getLogger("kindling.queue")

DELIVERY_TRIES = 3


def record(ev: Event, function_arn: str, condition: str) -> dict[str, Any]:
    """Lambda's invocation record (version 1.0) for an event that ended with ``condition``:
    Success | RetriesExhausted | EventAgeExceeded."""
    result = ev.last_result or {}
    response: dict[str, Any] = {"statusCode": result.get("statusCode", 200),
                                "executedVersion": result.get("executedVersion", ev.qualifier or "$LATEST")}
    if result.get("functionError"):
        response["functionError"] = result["functionError"]
    out: dict[str, Any] = {
        "version": "1.0",
        "timestamp": _iso(time.time()),
        "requestContext": {"requestId": ev.id, "functionArn": function_arn, "condition": condition,
                           "approximateInvokeCount": ev.invokes},
        "requestPayload": _json_or_text(ev.payload or b""),
        "responseContext": response,
    }
    if "payload" in result:
        out["responsePayload"] = _json_or_text(result["payload"].encode())
    return out


class Destinations:
    def __init__(self, settings: Settings, metrics: AsyncMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.invoker: InvokeService | None = None  # set once the invoke path exists
        self._sqs: dict[str, Any] = {}  # region → client
        self._queue_urls: dict[str, str] = {}  # queue ARN → URL

    async def deliver(self, ev: Event, target: str, body: dict[str, Any], trace: str) -> None:
        """Send an invocation record to an OnSuccess / OnFailure destination."""
        if not await self._send(target, json.dumps(body), None, trace):
            self.metrics[ev.function_name].destination_delivery_failures += 1

    async def dead_letter(self, ev: Event, target: str, error_code: str, error_message: str) -> None:
        """Send the event, as it came, to the dead-letter queue, with Lambda's three message attributes."""
        attributes = {"RequestID": {"DataType": "String", "StringValue": ev.id},
                      "ErrorCode": {"DataType": "Number", "StringValue": error_code},
                      "ErrorMessage": {"DataType": "String", "StringValue": error_message[:1024] or "-"}}
        body = (ev.payload or b"{}").decode("utf-8", "replace")
        if not await self._send(target, body, attributes, None):
            self.metrics[ev.function_name].dead_letter_errors += 1

    async def _send(self, target: str, body: str, attributes: dict[str, Any] | None, trace: str | None) -> bool:
        service = target.split(":")[2] if target.count(":") >= 5 else ""
        if service == "sqs" and not self.settings.sqs_endpoint:
            log.warning("cannot deliver to %s: no SQS endpoint is configured (--sqs-endpoint)", target)
            return False
        for attempt in range(1, DELIVERY_TRIES + 1):
            try:
                if service == "lambda":
                    await self._invoke(target, body, trace)
                elif service == "sqs":
                    await asyncio.to_thread(self._send_sqs, target, body, attributes)
                else:
                    log.warning("cannot deliver to %s: Kindling delivers to functions and SQS queues only", target)
                    return False
                return True
            except Exception as exc:
                if attempt == DELIVERY_TRIES:
                    log.warning("could not deliver to %s after %d tries: %s", target, attempt, exc)
                    return False
                await asyncio.sleep(0.2 * attempt)
        return False

    async def _invoke(self, target: str, body: str, trace: str | None) -> None:
        assert self.invoker is not None
        await self.invoker.invoke({"FunctionName": target, "InvocationType": "Event", "Payload": body.encode()},
                                  str(uuid.uuid4()), trace)

    def _client(self, region: str) -> Any:
        client = self._sqs.get(region)
        if client is None:
            client = self._sqs[region] = boto3.session.Session().client(
                "sqs", endpoint_url=self.settings.sqs_endpoint, region_name=region,
                aws_access_key_id=self.settings.sqs_access_key_id,
                aws_secret_access_key=self.settings.sqs_secret_access_key,
                config=Config(retries={"max_attempts": 2}, connect_timeout=2, read_timeout=10))
        return client

    def _send_sqs(self, arn: str, body: str, attributes: dict[str, Any] | None) -> None:
        _, _, _, region, account, name = arn.split(":", 5)
        client = self._client(region)
        url = self._queue_urls.get(arn)
        if url is None:
            url = self._queue_urls[arn] = client.get_queue_url(QueueName=name)["QueueUrl"]
        args: dict[str, Any] = {"QueueUrl": url, "MessageBody": body}
        if attributes:
            args["MessageAttributes"] = attributes
        client.send_message(**args)


def next_trace(ev: Event, function_arn: str) -> str:
    """The trace a destination invoke carries: the chain as the event's own run saw it."""
    return recursion.advanced(ev.trace_id, function_arn)


def _json_or_text(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"
