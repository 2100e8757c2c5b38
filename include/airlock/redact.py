"""Render untrusted or secret-bearing text safely: URLs without credentials, names without terminal escapes.

Two helpers, used everywhere text leaves the process (errors, logs, XCom, CLI output):

* :func:`redact_url` / :func:`redact_text` remove credentials from URLs: the
  userinfo part (``http://user:token@host`` -> ``http://***@host``) and the
  values of query or fragment parameters whose name says they are secret
  (``?token=``, ``X-Amz-Signature=``, ``access_token=``...). The host, port and
  path stay, so a message still says *where*. A URL that cannot be parsed is
  redacted by pattern rather than echoed.
* :func:`safe_text` renders a name that came from a model directory, a registry
  or a server (file names, owners, model names) so that printing it can never
  rewrite the terminal: control and format characters, lone surrogates (the
  undecodable bytes of a non-UTF-8 file name, as ``os.fsdecode`` carries them)
  and backslashes are escaped. Printable text, non-ASCII letters included,
  is kept as it is.
"""

from __future__ import annotations

import os
import re
import unicodedata
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

REDACTED = "***"

# Query/fragment parameter names whose values are credentials (case-insensitive substring match):
# tokens, API keys, passwords, presigned-URL signatures and credentials (X-Amz-*, X-Goog-*, Azure SAS "sig").
_SECRET_PARAM = re.compile(
    r"token|secret|passw|pwd|key|sig|credential|auth|session|cookie|^x-amz-|^x-goog-|^code$",
    re.IGNORECASE,
)
# A URL inside free text (an exception message, a log line): scheme://non-space run.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
# Fallback for what urlsplit refuses: anything between "//" and the last "@" before the path.
_USERINFO = re.compile(r"(//)[^/?#\s]*@")

# Unicode categories never printed raw: controls, format characters (bidi overrides, zero-width),
# surrogates (undecodable bytes), private use, unassigned, line and paragraph separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def redact_url(url: str) -> str:
    """``url`` without credentials: userinfo becomes ``***`` and secret-named parameter values become ``***``."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a malformed port, like the clients would
    except ValueError:
        return _redact_by_pattern(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    query = _redact_params(parts.query)
    fragment = _redact_params(parts.fragment)
    if (netloc, query, fragment) == (parts.netloc, parts.query, parts.fragment):
        return url  # nothing secret: return it byte-for-byte, not re-serialized
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def redact_text(text: str) -> str:
    """``text`` with every URL in it passed through :func:`redact_url`."""
    return _URL_IN_TEXT.sub(lambda match: redact_url(match.group(0)), text)


def has_credentials(url: str) -> bool:
    """True when :func:`redact_url` would change ``url``."""
    return redact_url(url) != url


def _redact_params(text: str) -> str:
    if "=" not in text:
        return text
    pairs = parse_qsl(text, keep_blank_values=True)
    if not any(_SECRET_PARAM.search(name) for name, _ in pairs):
        return text
    # Re-encode only the pairs; a secret value is replaced, never partially kept.
    return "&".join(
        f"{quote(name, safe='')}={REDACTED if _SECRET_PARAM.search(name) else quote(value, safe=':/')}"
        for name, value in pairs
    )


def _redact_by_pattern(url: str) -> str:
    head, sep, _query = url.partition("?")
    head = _USERINFO.sub(rf"\1{REDACTED}@", head)
    if not sep:
        return head
    # An unparseable URL's query is dropped whole: we cannot tell which part of it is secret.
    return f"{head}?{REDACTED}"


def safe_text(value: object, *, escape_backslash: bool = True) -> str:
    """``value`` (str, bytes or a path) as text that is safe to print on any terminal and in one log line.

    Undecodable bytes appear as ``\\xNN``, control and format characters (newlines
    included) as ``\\xNN``/``\\uNNNN``, and a backslash as ``\\\\``, so an escape in
    the output always means the name held something unprintable, never that it
    held a backslash followed by letters. ``escape_backslash=False`` is for our
    own messages, which quote names with ``repr`` already.
    """
    if isinstance(value, bytes):
        text = os.fsdecode(value)
    elif isinstance(value, os.PathLike):
        text = os.fsdecode(os.fspath(value))
    else:
        text = str(value)
    if text.isprintable() and text.isascii() and "\\" not in text:
        return text  # the common case, without a per-character pass
    return "".join(_escape_char(char, escape_backslash) for char in text)


def one_line(message: str) -> str:
    """An error message as one safe line: credentials redacted, control characters and bad bytes escaped."""
    return safe_text(redact_text(message), escape_backslash=False)


def _escape_char(char: str, escape_backslash: bool) -> str:
    if char == "\\":
        return "\\\\" if escape_backslash else char
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the undecodable byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    if unicodedata.category(char) in _UNSAFE_CATEGORIES:
        if code <= 0xFF:
            return f"\\x{code:02x}"
        return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
    return char
