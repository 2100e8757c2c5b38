"""One module per ``airlock`` verb; each exposes ``register(subparsers)``.

Keeping verbs apart keeps the CLI thin: a verb parses arguments, calls the
library stage, prints, and returns an exit code from :mod:`airlock.cli`.
"""
