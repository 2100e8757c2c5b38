"""Who may download through the proxy: bearer tokens, stored only as their sha256, each naming a consumer.

The token file (``airlock proxy token add NAME`` writes it, mode 0600)::

    {"schema": "airlock.proxy.tokens/v1",
     "consumers": [{"name": "serving-1", "sha256": "<sha256 of the token>", "created_at": "..."}]}

A consumer sends its token the way every Hub client does, ``Authorization:
Bearer <token>`` (``HF_TOKEN`` sets it). Tokens are 256 random bits, so a plain
sha256 is as good as a slow hash here, and the file leaks no usable secret. The
file is re-read when it changes (add or remove a consumer without a restart);
one that cannot be read or parsed refuses everyone until it is fixed: the proxy
fails closed, it never falls back to "no authentication".
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import tempfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from airlock.errors import AirlockError, ConfigurationError, first_validation_problem

TOKENS_SCHEMA = "airlock.proxy.tokens/v1"
TOKEN_PREFIX = "alp_"
_CONSUMER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}\Z")


class Unauthorized(AirlockError):
    """No token, or one the token file does not hold (401)."""


class TokenFileError(ConfigurationError):
    """The token file cannot be read, parsed or written; names the file and the problem."""


class Consumer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=_CONSUMER.pattern.removesuffix(r"\Z") + "$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    created_at: str | None = None


class TokenFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    schema_: str = Field(default=TOKENS_SCHEMA, alias="schema", pattern=f"^{re.escape(TOKENS_SCHEMA)}$")
    consumers: tuple[Consumer, ...] = ()


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (case-insensitive scheme), else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


# --------------------------------------------------------------------------- the file


def read_token_file(path: Path) -> TokenFile:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TokenFileError(f"cannot read the proxy token file {path}: {exc.strerror or exc}") from None
    try:
        parsed = TokenFile.model_validate(json.loads(data))
    except (ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, ValidationError):
            raise TokenFileError(f"{path}: {first_validation_problem(exc)}") from None
        raise TokenFileError(f"{path}: not JSON ({exc})") from None
    names = [c.name for c in parsed.consumers]
    if len(set(names)) != len(names):
        raise TokenFileError(f"{path}: a consumer is listed twice")
    return parsed


def _write_token_file(path: Path, content: TokenFile) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(content.model_dump(mode="json", by_alias=True), out, indent=2)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def add_consumer(path: Path, name: str) -> str:
    """Add consumer ``name`` with a new random token; return the token (shown once, stored only as its sha256)."""
    if not _CONSUMER.fullmatch(name):
        raise TokenFileError(f"consumer name {name!r}: letters, digits, '.', '_', '@', '-' (at most 128)")
    current = read_token_file(path) if path.exists() else TokenFile()
    if any(c.name == name for c in current.consumers):
        raise TokenFileError(f"{path}: consumer {name!r} exists already (remove it first to issue a new token)")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    added = Consumer(name=name, sha256=token_digest(token), created_at=datetime.now(UTC).isoformat())
    _write_token_file(path, TokenFile(consumers=(*current.consumers, added)))
    return token


def remove_consumer(path: Path, name: str) -> bool:
    current = read_token_file(path)
    kept = tuple(c for c in current.consumers if c.name != name)
    if len(kept) == len(current.consumers):
        return False
    _write_token_file(path, TokenFile(consumers=kept))
    return True


# --------------------------------------------------------------------------- checking requests


@dataclass(frozen=True)
class _Loaded:
    stamp: tuple[int, int, int, int]
    by_digest: dict[str, str]
    problem: str | None


class TokenStore:
    """The consumers of a token file, re-read whenever the file changes (size, mtime, inode)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._loaded: _Loaded | None = None
        self.check()  # a bad file at start-up is a configuration error, not a silent "nobody may pull"

    def check(self) -> None:
        loaded = self._current()
        if loaded.problem:
            raise TokenFileError(loaded.problem)

    def consumer(self, authorization: str | None) -> str:
        """The consumer the request's bearer token belongs to; :class:`Unauthorized` otherwise."""
        token = bearer_token(authorization)
        if token is None:
            raise Unauthorized("a bearer token is required (Authorization: Bearer <token>; HF_TOKEN sets it)")
        loaded = self._current()
        if loaded.problem:
            raise TokenFileError(loaded.problem)
        name = loaded.by_digest.get(token_digest(token))
        if name is None:
            raise Unauthorized("Invalid credentials in Authorization header")  # the Hub's own wording
        return name

    def _current(self) -> _Loaded:
        try:
            info = os.stat(self.path)
            stamp = (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        except OSError as exc:
            return _Loaded((0, 0, 0, 0), {}, f"cannot read the proxy token file {self.path}: {exc.strerror}")
        with self._lock:
            if self._loaded is not None and self._loaded.stamp == stamp:
                return self._loaded
            try:
                parsed = read_token_file(self.path)
                loaded = _Loaded(stamp, {c.sha256: c.name for c in parsed.consumers}, None)
            except TokenFileError as exc:
                loaded = _Loaded(stamp, {}, str(exc))
            self._loaded = loaded
            return loaded
