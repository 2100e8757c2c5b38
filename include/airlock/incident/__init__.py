"""Incident response: revoke a version, write the report (window, deployments), notify.

* :mod:`airlock.incident.report`: the report's content, where it is stored
  (``<registry root>/incidents/<org>/<name>/<version>/<incident-id>.{json,md}``),
  and its Markdown (every untrusted string escaped);
* :mod:`airlock.incident.respond`: the parameters, the idempotent revocation and
  the Airflow notifiers (webhook by default; Slack and email configurable).

The ``model_incident`` DAG wires them; the integrity watch (and the nightly
fingerprint check) trigger it, and anyone may trigger it by hand with a reason.
"""

from airlock.incident.report import (
    IncidentError,
    IncidentReport,
    Revocation,
    build_report,
    check_windows,
    incident_id,
    incident_prefix,
    list_reports,
    md_escape,
    read_report,
    render_markdown,
    store_report,
)
from airlock.incident.respond import (
    IncidentRequest,
    notification_channels,
    revocation_in,
    revoke_for_incident,
    send_notifications,
)

__all__ = [
    "IncidentError",
    "IncidentReport",
    "IncidentRequest",
    "Revocation",
    "build_report",
    "check_windows",
    "incident_id",
    "incident_prefix",
    "list_reports",
    "md_escape",
    "notification_channels",
    "read_report",
    "render_markdown",
    "revocation_in",
    "revoke_for_incident",
    "send_notifications",
    "store_report",
]
