"""Webhooks: where a job's events may be sent, how they are signed and delivered, and when to try again.

Each module holds one idea: ``targets`` (the target policy and the vetted addresses),
``signing`` (Standard Webhooks headers), ``delivery`` (one attempt), ``backoff`` (the retry schedule),
``events`` (event types, filter, payload) and ``outbox`` (a sender loop over a caller's queue);
``queue`` makes the job store that queue (the store also names each message: ``events.message_id``).
"""
