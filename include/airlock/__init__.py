"""Airlock: move models from outside the trust boundary into a verified registry.

The library is plain Python: it never imports Airflow at module level, so every
stage can be used and tested without a scheduler. DAGs in ``dags/`` only wire
these stages together.
"""

__version__ = "0.1.0"
