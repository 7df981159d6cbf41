"""Browser sign-in for the studio (``--sign-in``): a member of an account signs in with their password, and the
page's jobs become their account's.

``pages`` serves the sign-in page and signs in and out (the password is checked by the jobs service, which counts
failures in the job store); ``gate`` lets through only requests with a valid session cookie and passes the session
on as the request's only identity; ``sessions`` checks a cookie: its signature here (the cluster secret, shared by
every web front), then, at most every few seconds, its member at the jobs service; ``account``: the account page,
where an admin manages its members and API keys.
"""

from __future__ import annotations

from fastapi import FastAPI

from webui.session_token import SessionSigner
from webui.web.jobs_client import JobsClient
from webui.web.signin.account import AccountPages
from webui.web.signin.gate import SignInGate
from webui.web.signin.pages import SignInPages
from webui.web.signin.sessions import SessionCheck

__all__ = ["SignIn"]


class SignIn:
    """Sign-in for one web front: ``pages`` (add them before the studio is mounted at ``/``), then ``guard``."""

    def __init__(self, jobs: JobsClient, cluster_secret: str) -> None:
        self.check = SessionCheck(SessionSigner(cluster_secret), jobs)
        self.jobs = jobs

    def pages(self, app: FastAPI) -> None:
        app.include_router(SignInPages(self.jobs, self.check).router)
        app.include_router(AccountPages(self.jobs).router)

    def guard(self, app: FastAPI) -> None:
        """The gate around everything added so far (the middleware that act for the page's user among them)."""
        app.add_middleware(SignInGate, check=self.check)
