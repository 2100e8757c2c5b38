"""The Registry page in the Airflow UI, as plain Python (no Airflow import anywhere in this package).

- :mod:`airlock.ui.views` builds view models from a :class:`~airlock.registry.Registry`: models, versions,
  statuses from the index chain verified with the host trust store, the signing key from ``model.sig``
  verified with that trust store, check trends, artefacts, incident reports.
- :mod:`airlock.ui.trend` draws a check history as a small inline SVG (server-side, no script, no CDN).
- :mod:`airlock.ui.render` turns view models into HTML (Jinja2, autoescaped; every stored value is untrusted).
- :mod:`airlock.ui.security` holds the CSRF token and same-origin checks of the revoke form.
- :mod:`airlock.ui.app` is the FastAPI application; authentication is injected (``plugins/airlock_registry.py``
  supplies Airflow's), so the routes are tested without Airflow.
"""
