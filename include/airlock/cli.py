"""The ``airlock`` command line.

Exit codes follow ARCHITECTURE.md: 0 success, 1 a negative verdict (blocked,
invalid, refused), 2 the command could not do its job (bad input, unreachable
service, unreadable file). Each verb lives in :mod:`airlock.commands`; this
module dispatches and owns the one place where failures become exit codes.

Only a verb's own verdict may return 1. Anything raised while a verb runs,
expected (:class:`AirlockError`) or not (a botocore connection error, an
``OSError``, a bug), is exit 2 with one line on stderr that names what failed,
credentials redacted and control characters escaped, never a traceback: for
``scan``, ``verify`` and ``pull`` a 1 means "blocked/invalid/refused", and an
error must never read as a verdict (nor a traceback's exit 1 as one).
``AIRLOCK_DEBUG=1`` adds the traceback for developers; the exit code stays 2.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from airlock import __version__
from airlock.errors import AirlockError

EXIT_OK = 0
EXIT_NEGATIVE = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130

# Verb modules under airlock.commands, in the order `airlock --help` lists them.
VERBS = ("resolve", "scan", "hash", "sign", "verify", "pull", "keys", "registry", "evaluate", "fingerprint",
         "watch", "proxy")


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line refusal (the usage block is one ``--help`` away), exit 2 as argparse does."""

    def error(self, message: str) -> NoReturn:
        from airlock.redact import one_line

        self.exit(EXIT_ERROR, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


# --------------------------------------------------------------------------- option types (checked at parse time)


def positive_int(text: str, *, maximum: int | None = None) -> int:
    """An argparse ``type``: a whole number >= 1 (and <= ``maximum``)."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    if maximum is not None and value > maximum:
        raise argparse.ArgumentTypeError(f"{text!r} must be at most {maximum}")
    return value


def positive_seconds(text: str) -> float:
    """An argparse ``type``: a finite number of seconds above 0 (``nan``/``inf`` would disable a budget)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number of seconds above 0")
    return value


# --------------------------------------------------------------------------- parsing and running


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="airlock", description="Model supply-chain checks and registry.")
    parser.add_argument("--version", action="version", version=f"airlock {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for verb in VERBS:
        importlib.import_module(f"airlock.commands.{verb}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _tolerant_streams()
    args = build_parser().parse_args(argv)
    try:
        code = args.handler(args)
        sys.stdout.flush()  # inside the try: a closed pipe is reported here, not at interpreter exit
        return code
    except KeyboardInterrupt:
        _report(args.command, "interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`airlock registry list | head`); stop writing to it, quietly.
        _silence_stdout()
        _report(args.command, "output closed before it was complete (broken pipe)")
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - the one place every failure becomes one line and exit 2
        _report(args.command, describe_failure(exc))
        if os.environ.get("AIRLOCK_DEBUG"):
            import traceback

            traceback.print_exc()
        return EXIT_ERROR


def describe_failure(exc: BaseException) -> str:
    """What failed, in one line, for an exception raised while a verb ran (redaction happens in :func:`_report`)."""
    if isinstance(exc, AirlockError):
        return str(exc)
    module = type(exc).__module__ or ""
    if module.startswith(("botocore", "boto3", "s3transfer")):
        return _describe_s3(exc)
    if module.startswith(("requests", "urllib3", "hvac", "httpx", "httpcore")):
        return _describe_http(exc)
    if isinstance(exc, UnicodeEncodeError):
        return (f"cannot write {exc.object[exc.start:exc.end]!r} in the {exc.encoding} encoding of the terminal "
                f"or file system ({exc.reason}); set PYTHONIOENCODING=utf-8 or a UTF-8 locale")
    if isinstance(exc, OSError):
        return _describe_os(exc)
    if module.startswith("pydantic") and hasattr(exc, "errors"):
        from airlock.errors import first_validation_problem

        return f"invalid data: {first_validation_problem(exc)}"
    return f"unexpected {type(exc).__name__}: {exc} (AIRLOCK_DEBUG=1 shows the traceback)"


def _describe_s3(exc: BaseException) -> str:
    name = type(exc).__name__
    kwargs = getattr(exc, "kwargs", {}) or {}
    endpoint = kwargs.get("endpoint_url")
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore ClientError: the server answered with an error
        error = response.get("Error", {})
        operation = getattr(exc, "operation_name", "request")
        return f"S3 {operation} failed: {error.get('Code', 'error')} ({error.get('Message') or name})"
    if name in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
        return f"S3 credentials missing or incomplete ({name}): set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY " \
               f"or a profile"
    if endpoint:
        # The request URL's query (list-type=2&prefix=...) is noise here; where it went is what matters.
        return f"cannot reach the S3 endpoint {str(endpoint).partition('?')[0]} ({name})"
    return f"S3 client failed ({name}: {exc})"


def _describe_http(exc: BaseException) -> str:
    request = getattr(exc, "request", None)
    url = getattr(request, "url", None)
    where = f" {url}" if url else ""
    return f"request to{where or ' a service'} failed ({type(exc).__name__}: {_first_line(exc)})"


def _describe_os(exc: OSError) -> str:
    from airlock.redact import safe_text

    names = [safe_text(n) for n in (exc.filename, exc.filename2) if n is not None]
    reason = exc.strerror or _first_line(exc) or type(exc).__name__
    return f"{' -> '.join(names)}: {reason}" if names else f"{type(exc).__name__}: {reason}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _report(command: str, message: str) -> None:
    from airlock.redact import one_line

    print(f"airlock {command}: {one_line(message)}", file=sys.stderr)
    try:
        sys.stderr.flush()
    except OSError:
        pass


def _tolerant_streams() -> None:
    """Never fail while printing: characters the terminal's encoding lacks are written as backslash escapes.

    Untrusted names are escaped by :func:`airlock.redact.safe_text` before they are
    printed; this covers everything else (an ``ascii:strict`` terminal and a
    model name with an accent), so output can cost fidelity, never the exit code.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):  # not a TextIOWrapper (embedded, redirected oddly)
            pass


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main())
