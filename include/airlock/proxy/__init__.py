"""The model proxy: the Hugging Face Hub download API over the registry, serving only what may be deployed.

``airlock proxy serve`` runs it (uvicorn; not inside Airflow). A repo id is a
registry model ``org/name``, a revision is a registry version (or the commit id
the proxy presents for it, or ``main`` where a model's policy maps it). Only
released, indexed, signed versions that are not revoked (deprecated ones only
where configured) are served, every file checked against its signature before
its first byte leaves, and every download recorded as a pull in the index.
Nothing outside the registry is ever fetched.

Modules: :mod:`~airlock.proxy.hub` (the Hub's HTTP shapes),
:mod:`~airlock.proxy.auth` (bearer tokens), :mod:`~airlock.proxy.verification`
(index, signatures and per-file checks, cached while valid),
:mod:`~airlock.proxy.objects` (ranges and stored-object identity per backend),
:mod:`~airlock.proxy.records` (pull records, tamper reports),
:mod:`~airlock.proxy.app` (routes), :mod:`~airlock.proxy.server` (wiring, uvicorn).
"""
