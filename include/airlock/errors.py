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
