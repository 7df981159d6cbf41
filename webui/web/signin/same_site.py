"""Whether a browser sent a form from another site: ``Sec-Fetch-Site`` says so, or an ``Origin`` other than this
site's own (its scheme as the browser used it: https behind a balancer that ends TLS). The session cookie is
``SameSite=Strict`` besides, so a foreign page's form arrives without it; this check holds should a browser not
honour that."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import Scope

from webui.web.signin.cookies import over_tls

SAME_SITE_FETCHES = frozenset({"same-origin", "none"})
"""``Sec-Fetch-Site`` values of a request from this site's own page, or one a person typed."""


def cross_site(scope: Scope) -> bool:
    headers = Headers(scope=scope)
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in SAME_SITE_FETCHES:
        return True
    origin = headers.get("origin")
    own = f"{'https' if over_tls(scope) else 'http'}://{headers.get('host', '')}"
    return origin is not None and origin.lower() != own.lower()
