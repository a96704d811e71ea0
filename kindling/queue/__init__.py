"""Asynchronous invocation: the durable event queue behind ``InvocationType=Event``.

``service.EventQueue`` accepts an event (answered 202 only once it is committed and fsync'd by the group-commit
``writer``), and the ``dispatcher`` runs it at least once through the same invoke path as synchronous invokes:
function errors are retried per MaximumRetryAttempts, throttles and system errors with backoff (``retry``) until
MaximumEventAgeInSeconds; then ``destinations`` delivers Lambda's invocation record (or the event to a dead-letter
queue). ``recursion`` counts hops of a call chain in the trace header; ``metrics`` keeps the async counters.
"""
