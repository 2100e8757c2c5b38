"""Behavioural fingerprints: canonical prompts, logprob fingerprints per runtime class, calibration,
comparison, a great-expectations validation with Data Docs, and a sampled-text backend for endpoints.

Importing this package is cheap: torch/transformers load inside :func:`fingerprint_model` and
:func:`calibrate`, great_expectations inside :mod:`airlock.fingerprint.gx`.
"""

from airlock.fingerprint.compare import ComparisonRefused, compare
from airlock.fingerprint.model import FingerprintError, calibrate, fingerprint_model
from airlock.fingerprint.schema import (
    CALIBRATION_SCHEMA,
    COMPARISON_SCHEMA,
    FINGERPRINT_SCHEMA,
    Calibration,
    Comparison,
    Fingerprint,
)

__all__ = [
    "CALIBRATION_SCHEMA", "COMPARISON_SCHEMA", "FINGERPRINT_SCHEMA", "Calibration", "Comparison",
    "ComparisonRefused", "Fingerprint", "FingerprintError", "calibrate", "compare", "fingerprint_model",
]
