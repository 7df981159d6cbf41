"""Whether a browser sent a request from a page of another site: the check behind every form and action that
changes something (the sign-in and account pages, the sidecar's operations page).

``Sec-Fetch-Site`` says so, or an ``Origin`` other than this site's own (its scheme as the browser used it:
https behind a balancer that ends TLS). ``python -m balancer.cli``, curl and Prometheus send neither header.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import Scope

SAME_SITE_FETCHES = frozenset({"same-origin", "none"})
"""``Sec-Fetch-Site`` values of a request from this site's own page, or one a person typed."""


def over_tls(scope: Scope) -> bool:
    """Whether the browser reached the site over https (HAProxy says so in ``X-Forwarded-Proto``)."""
    return scope.get("scheme") in ("https", "wss") or Headers(scope=scope).get("x-forwarded-proto") == "https"


def cross_site(scope: Scope) -> bool:
    """Whether a browser sent this request from a page that is not this site's own."""
    headers = Headers(scope=scope)
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in SAME_SITE_FETCHES:
        return True
    origin = headers.get("origin")
    own = f"{'https' if over_tls(scope) else 'http'}://{headers.get('host', '')}"
    return origin is not None and origin.lower() != own.lower()
