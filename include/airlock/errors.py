"""Exception types shared by every stage.

Each stage raises a subclass of :class:`AirlockError` with a message that names
the offending file, field or setting, so an operator reading a failed task log
knows what to fix without reading code.
"""


class AirlockError(Exception):
    """Base class for every error Airlock raises on purpose."""


class ConfigurationError(AirlockError):
    """A setting is missing or invalid (names the environment variable or connection)."""


class SourceError(AirlockError):
    """A model source cannot be parsed, reached or pinned to an immutable revision."""


class QuarantineError(AirlockError):
    """A model cannot be taken into quarantine: a refused file name, a tier limit, no space, a failed download."""


class DownloadError(QuarantineError):
    """Files could not be fetched; ``retryable`` says whether another attempt could help (partials resume)."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class DownloadTimeout(DownloadError):
    """The download did not finish within its time budget; a later attempt resumes from the partial files."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class IntegrityError(AirlockError):
    """Bytes do not match what the source or a vendor manifest vouches for; names every file involved.

    A blocking verdict, not a transient failure: retrying cannot make a mismatch go away.
    """


class ManifestError(AirlockError):
    """A directory cannot be hashed into a manifest: a symlink, a special file, a file that changed while read."""


class SourceUnavailable(SourceError):
    """The source could not be reached or answered with a server error; a later attempt may succeed."""


def first_validation_problem(exc) -> str:  # exc: pydantic.ValidationError
    """``field <dotted.location>: <message>`` of a pydantic error's first problem, for messages naming the field."""
    first = exc.errors()[0]
    location = ".".join(str(part) for part in first["loc"]) or "(top level)"
    return f"field {location}: {first['msg']}"
