"""CSRF protection of the Registry page's revoke form, and the actor name a revocation records.

The Airflow UI keeps its session in the ``_token`` cookie (a JWT). The simple
auth manager's login page sets it from script without a ``SameSite``
attribute, so browsers apply their defaults (Lax in Chromium, which still lets
a top-level cross-site POST through shortly after login; other browsers
differ). A cookie-authenticated POST therefore needs more than the cookie:

- a **token** bound to the session: HMAC-SHA256 under the API server's secret
  key over the session cookie's value. It is rendered into the form and cannot
  be computed by another site (which can read neither the cookie nor the page);
- a **same-origin** request: an ``Origin`` (or, without one, ``Referer``)
  header naming another origin is refused. Browsers send ``Origin`` on every
  POST, so this refuses cross-site posts even before the token is looked at.

Requests authenticated by an ``Authorization: Bearer`` header (REST clients)
carry no ambient credential and need neither.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

_CONTEXT = b"airlock-registry-csrf/v1\x00"


def csrf_token(secret: bytes, session: str) -> str:
    """The form token for the session whose cookie value is ``session``."""
    if not secret:
        raise ValueError("the CSRF secret is empty")
    return hmac.new(secret, _CONTEXT + session.encode(), hashlib.sha256).hexdigest()


def csrf_valid(secret: bytes, session: str | None, submitted: str | None) -> bool:
    """Whether ``submitted`` is this session's token (constant-time comparison; no session, no token: False)."""
    if not secret or not session or not submitted:
        return False
    return hmac.compare_digest(csrf_token(secret, session), submitted)


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of ``url`` (default ports dropped), lower-case; None when it has none."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    default = {"http": 80, "https": 443}[parts.scheme]
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"  # IPv6 literal
    return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


def same_origin(allowed: set[str], origin: str | None, referer: str | None) -> bool:
    """Whether the request comes from one of ``allowed`` origins (as :func:`origin_of` writes them).

    ``Origin`` decides when present (``null``, sent by sandboxed or privacy-
    stripped contexts, is not an allowed origin); otherwise ``Referer``; a
    request with neither is left to the token alone.
    """
    if origin is not None:
        return origin_of(origin) in allowed
    if referer is not None:
        return origin_of(referer) in allowed
    return True


def ui_actor(username: str) -> str:
    """The index ``actor`` of a change made on the Registry page: who, and through what."""
    name = " ".join(username.split())
    if not name:
        raise ValueError("the signed-in user has no name")
    return f"airflow-ui:{name}"
