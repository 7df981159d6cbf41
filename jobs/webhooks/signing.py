"""Signing webhook requests per Standard Webhooks (https://www.standardwebhooks.com), with its own package.

Each request carries ``webhook-id`` (the message: the same on every retry), ``webhook-timestamp`` (this attempt,
Unix seconds) and ``webhook-signature`` (``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``). The secret is
``whsec_<base64>``, one per deployment; it is never logged or shown in a ``repr``.
"""

from __future__ import annotations

import base64
import logging
import math
import secrets
from datetime import datetime
from pathlib import Path

from standardwebhooks import Webhook

from jobs.secret_file import read_secret_file

logger = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
SECRET_FILE = "webhook-secret"
"""The generated secret's file in the run directory, when the operator names none."""


def new_secret() -> str:
    """A fresh signing secret, ``whsec_`` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


class WebhookSigner:
    """Signs webhook bodies with one secret (``whsec_…``)."""

    def __init__(self, secret: str) -> None:
        if not secret.startswith(SECRET_PREFIX):
            raise ValueError("the webhook secret must start with whsec_ (make one with jobs.webhooks.signing"
                             ".new_secret)")
        try:
            self._webhook = Webhook(secret)
        except Exception as error:  # the package raises binascii.Error, EmptyWebhookSecretError …
            raise ValueError("the webhook secret is not whsec_ followed by base64") from error

    def __repr__(self) -> str:
        return "WebhookSigner(secret=<hidden>)"

    def headers(self, message_id: str, body: bytes, at: datetime) -> dict[str, str]:
        """The three Standard Webhooks headers for ``body`` sent at ``at`` (a timezone-aware time)."""
        return {
            "webhook-id": message_id,
            "webhook-timestamp": str(math.floor(at.timestamp())),
            "webhook-signature": self._webhook.sign(message_id, at, body),
        }


def read_secret(path: Path, create: bool = False) -> str:
    """The ``whsec_`` secret in the file ``path``; with ``create``, a missing file is first made with a new secret
    (``jobs.secret_file``: mode 0600, written once; give the receivers and every balancer host the same)."""
    return read_secret_file(path, "webhook signing secret", new_secret, WebhookSigner, create=create)
