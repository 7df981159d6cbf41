"""The jobs package's domain errors: what the store refuses, in words a client can be shown."""

from __future__ import annotations


class JobsError(Exception):
    """Base of the jobs package's domain errors; ``code`` is a stable machine-readable name."""

    code = "jobs_error"


class JobNotFound(JobsError):
    """No job has this id (never had, or the id is malformed)."""

    code = "job_not_found"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"There is no job {job_id!r}.")
        self.job_id = job_id


class JobGone(JobsError):
    """The job existed, but its retention ran out or its owner deleted it: its results and record are gone (HTTP
    410)."""

    code = "job_expired"

    def __init__(self, job_id: str, owner: str | None = None) -> None:
        super().__init__(f"Job {job_id!r} has expired or was deleted: its record and results are gone (its retention "
                         "ran out, or its owner deleted it).")
        self.job_id = job_id
        self.owner = owner


class JobStillActive(JobsError):
    """A job that is still queued or running cannot be deleted (HTTP 409): cancel it first."""

    code = "job_active"

    def __init__(self, job_id: str, status: str) -> None:
        super().__init__(f"Job {job_id} is {status}: cancel it first (POST /v1/jobs/{job_id}/cancel), then delete it "
                         "once it has stopped.")
        self.job_id = job_id


class IdempotencyConflict(JobsError):
    """The idempotency key was used before with another request body (HTTP 422)."""

    code = "idempotency_conflict"

    def __init__(self, key: str, job_id: str) -> None:
        super().__init__(f"The idempotency key {key!r} was already used for job {job_id} with a different request; "
                         "use a new key for a new request.")
        self.key = key
        self.job_id = job_id


class InvalidCursor(JobsError):
    """A listing cursor this store did not hand out (HTTP 400)."""

    code = "invalid_cursor"

    def __init__(self) -> None:
        super().__init__("The cursor is not one this service handed out: start again without a cursor.")


class ResultNotFound(JobsError):
    """The job has no result with this index (yet: it has not succeeded; or never: the index is past its last)."""

    code = "result_not_found"

    def __init__(self, job_id: str, index: int, detail: str) -> None:
        super().__init__(f"Job {job_id} has no result {index}: {detail}.")
        self.job_id = job_id
        self.index = index


class PhotoNotFound(JobsError):
    """The job keeps no photo: it was no retouch, or its account's retention removed the photo (HTTP 404)."""

    code = "photo_not_found"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"Job {job_id} keeps no photo: it was not a retouch, or its account's retention removed the "
                         "photo since.")
        self.job_id = job_id


class DeliveryNotFound(JobsError):
    """The job has no webhook delivery with this id (HTTP 404)."""

    code = "delivery_not_found"

    def __init__(self, job_id: str, delivery_id: str) -> None:
        super().__init__(f"Job {job_id} has no webhook delivery {delivery_id!r}; its deliveries are listed at "
                         f"/v1/jobs/{job_id}/deliveries.")
        self.job_id = job_id
        self.delivery_id = delivery_id


class DeliveryInProgress(JobsError):
    """An attempt of this delivery is being made right now (HTTP 409)."""

    code = "delivery_in_progress"

    def __init__(self, delivery_id: str) -> None:
        super().__init__(f"Webhook delivery {delivery_id} is being attempted right now; its outcome will be in the "
                         "delivery log within 15 s. Ask again after that for one more attempt.")
        self.delivery_id = delivery_id


class WebhooksOff(JobsError):
    """This service sends no webhooks (HTTP 503): it was built without a sender."""

    code = "webhooks_off"

    def __init__(self) -> None:
        super().__init__("This jobs service does not send webhooks; ask another, or its operator.")


class NotShareable(JobsError):
    """Only a succeeded job's results can be shared (HTTP 409)."""

    code = "not_shareable"

    def __init__(self, job_id: str, status: str) -> None:
        super().__init__(f"Job {job_id} is {status}: only a succeeded job's results can be shared; ask again once "
                         "it has succeeded.")
        self.job_id = job_id


class ShareLinkInvalid(JobsError):
    """A share link this service did not sign, or one changed since (HTTP 403)."""

    code = "share_link_invalid"

    def __init__(self) -> None:
        super().__init__("This share link is not valid: it was changed or cut short. Ask whoever shared it for the "
                         "whole link, or a new one.")


class ShareLinkExpired(JobsError):
    """A share link past its expiry (HTTP 410)."""

    code = "share_link_expired"

    def __init__(self, expired_at: str) -> None:
        super().__init__(f"This share link expired at {expired_at}. Ask whoever shared it for a new one.")


class AccountNotFound(JobsError):
    """No account has this name."""

    code = "account_not_found"

    def __init__(self, name: str) -> None:
        super().__init__(f"There is no account {name!r}; `python -m jobs accounts list` shows them.")


class AccountExists(JobsError):
    """An account with this name exists already."""

    code = "account_exists"

    def __init__(self, name: str) -> None:
        super().__init__(f"An account named {name!r} exists already; choose another name.")


class MemberNotFound(JobsError):
    """The account has no such member."""

    code = "member_not_found"

    def __init__(self, account: str, user: str) -> None:
        super().__init__(f"{user!r} is not a member of account {account!r}.")


class ApiKeyNotFound(JobsError):
    """No API key has this prefix or id."""

    code = "api_key_not_found"

    def __init__(self, prefix: str) -> None:
        super().__init__(f"There is no API key {prefix!r}; `python -m jobs accounts list-keys ACCOUNT` shows an "
                         "account's keys by their prefix.")
