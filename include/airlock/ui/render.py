"""HTML of the Registry page (Jinja2 with autoescaping; one stylesheet and one icon, served by the app).

Every value that reaches a template passes :func:`_display` first (control and
format characters such as newlines or right-to-left overrides made visible, so
a stored name cannot pass for another) and is then HTML-escaped by Jinja's
autoescape, in text and in attributes alike. Links are built here from
validated names with every path segment and query value percent-encoded; no
stored string ever becomes a URL scheme or a raw attribute. The page needs no
script, and the Content-Security-Policy the app sends allows none.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urlencode

from jinja2 import DictLoader, Environment, StrictUndefined
from markupsafe import Markup

from airlock.redact import safe_text
from airlock.ui.trend import trend_svg
from airlock.ui.views import Artifact, CheckTrend, ModelView, RegistryView, VersionView

INGEST_DAG_ID = "model_ingest"


@dataclass(frozen=True)
class PageContext:
    """Who is looking, and where things are."""

    base: str  # where the registry app is mounted, e.g. "/registry" (no trailing slash)
    airflow_base: str  # the Airflow UI's base path, e.g. "/" (trailing slash)
    user: str
    may_revoke: bool
    csrf_token: str | None  # None: not a cookie session (no form can be posted from this page)


# --------------------------------------------------------------------------- URLs


def _seg(value: str) -> str:
    return quote(value, safe="")


def index_url(ctx: PageContext, query: str = "") -> str:
    return f"{ctx.base}/" + (f"?{urlencode({'q': query})}" if query else "")


def version_url(ctx: PageContext, model: str, version: str) -> str:
    org, name = model.split("/", 1)
    return f"{ctx.base}/models/{_seg(org)}/{_seg(name)}/versions/{_seg(version)}"


def revoke_url(ctx: PageContext, model: str, version: str) -> str:
    return version_url(ctx, model, version) + "/revoke"


def download_url(ctx: PageContext, version: VersionView, artifact: Artifact) -> str:
    return version_url(ctx, version.model, version.version) + "/download?" + urlencode({"key": artifact.key})


def run_url(ctx: PageContext, run_id: str) -> str:
    return f"{ctx.airflow_base}dags/{_seg(INGEST_DAG_ID)}/runs/{_seg(run_id)}"


# --------------------------------------------------------------------------- filters


def _display(value: object) -> object:
    """Every ``{{ }}`` output: Markup (built here) as is, None as a dash, anything else made printable."""
    if isinstance(value, Markup):
        return value
    if value is None:
        return "–"
    if isinstance(value, datetime):
        return f"{value.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    return safe_text(value, escape_backslash=False)


def _short(digest: str | None) -> str:
    return f"{digest[:12]}…" if digest else "–"


def _verdict_class(verdict: str | None) -> str:
    return {"pass": "ok", "fail": "bad", "error": "warn"}.get(verdict or "", "none")


def _status_class(status: str) -> str:
    return {"approved": "ok", "deprecated": "warn", "revoked": "bad"}.get(status, "none")


def _trend(trend: CheckTrend) -> Markup:
    return trend_svg(trend.points, label=f"{trend.check} checks")


_ENV = Environment(
    loader=DictLoader({}),
    autoescape=True,
    finalize=_display,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters.update(short=_short, verdict_class=_verdict_class, status_class=_status_class, trend=_trend)
_ENV.globals.update(version_url=version_url, revoke_url=revoke_url, download_url=download_url, run_url=run_url,
                    index_url=index_url)

_LAYOUT = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{% block title %}Model Registry{% endblock %}</title>
<link rel="stylesheet" href="{{ ctx.base }}/static/registry.css">
</head>
<body>
<header>
  <a class="home" href="{{ index_url(ctx) }}">Model Registry</a>
  <form class="search" method="get" action="{{ index_url(ctx) }}">
    <input type="search" name="q" value="{{ query }}" placeholder="filter models" aria-label="filter models">
  </form>
  <span class="user">signed in as <b>{{ ctx.user }}</b>{% if ctx.may_revoke %} (may revoke){% endif %}</span>
</header>
<main>
{% if error %}<p class="banner bad" role="alert">{{ error }}</p>{% endif %}
{% if notice %}<p class="banner ok" role="status">{{ notice }}</p>{% endif %}
{% block main %}{% endblock %}
</main>
</body>
</html>
"""

_MACROS = """
{% macro check_cell(v, trend) %}
  {% set last = trend.last %}
  {% if last %}
    <span class="verdict {{ last.verdict|verdict_class }}" title="{{ last.target }}: {{ last.summary }}">{{ last.verdict }}</span>
    <span class="when">{{ last.at }}</span>
    {{ trend|trend }}
  {% else %}
    <span class="verdict none">no checks yet</span>
  {% endif %}
{% endmacro %}

{% macro links(v) %}
  {% if v.ingest_run_id %}<a href="{{ run_url(ctx, v.ingest_run_id) }}">ingest run</a>{% endif %}
  {% set bom = v.artifact("aibom") %}
  {% if bom %}<a href="{{ download_url(ctx, v, bom) }}" download>AI-BOM</a>{% endif %}
  {% set scan = v.artifact("scan") %}
  {% if scan %}<a href="{{ download_url(ctx, v, scan) }}">scan report</a>{% endif %}
  {% for incident in v.artifacts_of("incident") %}<a class="incident" href="{{ download_url(ctx, v, incident) }}">incident: {{ incident.name }}</a>{% endfor %}
{% endmacro %}
"""

_INDEX = """{% extends "layout" %}
{% from "macros" import check_cell, links with context %}
{% block main %}
<p class="where">Registry <code>{{ view.url }}</code>. Statuses come from the index chain verified with this host's trust store.</p>
{% if view.problem %}<p class="banner bad">{{ view.problem }}</p>{% endif %}
{% if not view.models %}<p class="empty">{% if view.query %}No model matches this filter.{% else %}No models in the registry yet.{% endif %}</p>{% endif %}
{% for model in view.models %}
<section class="model" data-model="{{ model.name }}">
  <h2>{{ model.name }}</h2>
  <p class="record">owner <b>{{ model.owner }}</b> · minimum tier <b>{{ model.risk_tier }}</b> · source <code>{{ model.source }}</code>
  {% if model.verified %} · index verified{% if model.checkpoint_key %} (checkpoint key {{ model.checkpoint_key }}){% endif %}{% endif %}</p>
  {% if model.problem %}<p class="banner bad">{{ model.problem }}</p>{% endif %}
  <table>
    <thead><tr><th>version</th><th>status</th><th>owner</th><th>tier</th><th>source</th><th>root digest</th><th>signing key</th><th>approver</th><th>integrity</th><th>fingerprint</th><th>links</th></tr></thead>
    <tbody>
    {% for v in model.versions %}
      <tr data-version="{{ v.version }}">
        <td><a href="{{ version_url(ctx, v.model, v.version) }}">{{ v.version }}</a></td>
        <td><span class="status {{ v.status|status_class }}"{% if v.status_reason %} title="{{ v.status_reason }}"{% endif %}>{{ v.status }}</span></td>
        <td>{{ v.owner }}</td>
        <td>{{ v.risk_tier }}</td>
        <td><code>{{ v.source }}</code></td>
        <td><code title="sha256:{{ v.root_digest }}">{{ v.root_digest|short }}</code></td>
        <td>{% if v.signing_key %}{{ v.signing_key }}{% else %}<span class="problem" title="{{ v.signature_problem or '' }}">not verified</span>{% endif %}</td>
        <td>{{ v.approver }}</td>
        <td class="check">{{ check_cell(v, v.integrity) }}</td>
        <td class="check">{{ check_cell(v, v.fingerprint) }}</td>
        <td class="links">{{ links(v) }}</td>
      </tr>
    {% endfor %}
    </tbody>
  </table>
</section>
{% endfor %}
{% endblock %}
"""

_VERSION = """{% extends "layout" %}
{% from "macros" import check_cell, links with context %}
{% block title %}{{ v.model }}@{{ v.version }} · Model Registry{% endblock %}
{% block main %}
<p class="crumbs"><a href="{{ index_url(ctx) }}">all models</a> / {{ v.model }}</p>
<h2>{{ v.model }}@{{ v.version }} <span class="status {{ v.status|status_class }}" id="status">{{ v.status }}</span></h2>
{% if model.problem %}<p class="banner bad">{{ model.problem }}</p>{% endif %}
{% if v.problem %}<p class="banner bad">{{ v.problem }}</p>{% endif %}
<dl class="facts">
  {% if v.status_reason %}<dt>reason</dt><dd id="status-reason">{{ v.status_reason }} ({{ v.status_by }}, {{ v.status_at }})</dd>{% endif %}
  <dt>owner</dt><dd>{{ v.owner }}</dd>
  <dt>risk tier</dt><dd>{{ v.risk_tier }}</dd>
  <dt>source</dt><dd><code>{{ v.source }}</code>{% if v.source_revision %} @ <code>{{ v.source_revision }}</code>{% endif %}</dd>
  <dt>root digest</dt><dd><code>sha256:{{ v.root_digest }}</code></dd>
  <dt>signing key</dt><dd>{% if v.signing_key %}{{ v.signing_key }} (model.sig verified with the host trust store){% else %}<span class="problem">not verified: {{ v.signature_problem }}</span>{% endif %}</dd>
  <dt>approver</dt><dd>{{ v.approver }}</dd>
  <dt>promoted</dt><dd>{{ v.promoted_at }} by <code>{{ v.promoted_by }}</code></dd>
  <dt>integrity</dt><dd class="check">{{ check_cell(v, v.integrity) }}</dd>
  <dt>fingerprint</dt><dd class="check">{{ check_cell(v, v.fingerprint) }}</dd>
  <dt>links</dt><dd class="links">{{ links(v) }}</dd>
</dl>

<h3>Artefacts</h3>
<table>
  <thead><tr><th>object</th><th>kind</th><th>sha256</th><th>recorded by</th></tr></thead>
  <tbody>
  {% for a in v.artifacts %}
    <tr><td><a href="{{ download_url(ctx, v, a) }}">{{ a.key }}</a></td><td>{{ a.kind }}</td><td><code>{{ a.sha256|short }}</code></td>
    <td>{% if a.signed %}signed plan{% elif a.sha256 %}check record{% else %}nothing (stored only){% endif %}</td></tr>
  {% else %}
    <tr><td colspan="4">none</td></tr>
  {% endfor %}
  </tbody>
</table>

{% for trend in (v.integrity, v.fingerprint) %}
<h3>{{ trend.check }} checks ({{ trend.total }})</h3>
{% if trend.points %}
<table>
  <thead><tr><th>when</th><th>verdict</th><th>target</th><th>summary</th><th>by</th></tr></thead>
  <tbody>
  {% for p in trend.points|reverse %}
    <tr><td>{{ p.at }}</td><td><span class="verdict {{ p.verdict|verdict_class }}">{{ p.verdict }}</span></td><td><code>{{ p.target }}</code></td><td>{{ p.summary }}</td><td><code>{{ p.actor }}</code></td></tr>
  {% endfor %}
  </tbody>
</table>
{% else %}<p class="empty">no checks yet</p>{% endif %}
{% endfor %}

<h3>Deployments (pull records)</h3>
{% if v.pulls %}
<table>
  <thead><tr><th>when</th><th>host</th><th>path</th><th>by</th><th>key</th></tr></thead>
  <tbody>{% for p in v.pulls %}<tr><td>{{ p.at }}</td><td>{{ p.host }}</td><td><code>{{ p.dest }}</code></td><td>{{ p.actor }}</td><td>{{ p.key_id }}</td></tr>{% endfor %}</tbody>
</table>
{% else %}<p class="empty">no pulls recorded</p>{% endif %}

<h3>History</h3>
<table>
  <thead><tr><th>#</th><th>when</th><th>event</th><th>by</th><th>detail</th></tr></thead>
  <tbody>{% for h in v.history %}<tr><td>{{ h.seq }}</td><td>{{ h.at }}</td><td>{{ h.kind }}</td><td><code>{{ h.actor }}</code></td><td>{{ h.detail }}</td></tr>{% endfor %}</tbody>
</table>

{% if v.revocable %}
<h3>Revoke</h3>
{% if ctx.may_revoke and ctx.csrf_token %}
<form class="revoke" method="post" action="{{ revoke_url(ctx, v.model, v.version) }}">
  <input type="hidden" name="csrf_token" value="{{ ctx.csrf_token }}">
  <label>Reason (recorded in the signed index with your name)
    <input type="text" name="reason" required maxlength="500" autocomplete="off"></label>
  <button type="submit" name="action" value="revoke">Revoke {{ v.model }}@{{ v.version }}</button>
  <p class="hint">Revocation is final: pulls and verified loads refuse the version from then on.</p>
</form>
{% elif ctx.may_revoke %}
<p class="hint">Revoking from this page needs a browser session (or POST with a bearer token).</p>
{% else %}
<p class="hint">Only administrators may revoke a version.</p>
{% endif %}
{% endif %}
{% endblock %}
"""

_ENV.loader = DictLoader({"layout": _LAYOUT, "macros": _MACROS, "index": _INDEX, "version": _VERSION})


def render_index(view: RegistryView, ctx: PageContext, *, notice: str | None = None,
                 error: str | None = None) -> str:
    return _ENV.get_template("index").render(view=view, ctx=ctx, query=view.query, notice=notice, error=error)


def render_version(model: ModelView, version: VersionView, ctx: PageContext, *, notice: str | None = None,
                   error: str | None = None) -> str:
    return _ENV.get_template("version").render(model=model, v=version, ctx=ctx, query="", notice=notice,
                                                error=error)


def render_message(ctx: PageContext, message: str, *, title: str = "Model Registry") -> str:
    """A page that only says ``message`` (errors without a version to show)."""
    template = _ENV.from_string('{% extends "layout" %}{% block title %}{{ title }}{% endblock %}'
                                '{% block main %}{% endblock %}')
    return template.render(ctx=ctx, query="", notice=None, error=message, title=title)


STYLESHEET = """
:root { color-scheme: light; --ok: #2f855a; --bad: #c53030; --warn: #b7791f; --none: #718096; }
* { box-sizing: border-box; }
body { margin: 0; font: 13px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1a202c;
       background: #f7fafc; }
header { display: flex; gap: 16px; align-items: center; padding: 8px 16px; background: #fff;
         border-bottom: 1px solid #e2e8f0; }
header .home { font-weight: 700; font-size: 15px; color: #1a202c; text-decoration: none; }
header .search input { padding: 4px 8px; border: 1px solid #cbd5e0; border-radius: 4px; min-width: 220px; }
header .user { margin-left: auto; color: #4a5568; }
main { padding: 12px 16px 32px; }
h2 { margin: 18px 0 4px; font-size: 16px; }
h3 { margin: 20px 0 6px; font-size: 14px; }
section.model { background: #fff; border: 1px solid #e2e8f0; border-radius: 6px; padding: 4px 12px 12px;
                margin-bottom: 14px; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; vertical-align: top; padding: 5px 8px; border-bottom: 1px solid #edf2f7; }
th { font-weight: 600; color: #4a5568; font-size: 12px; }
code { font: 12px/1.3 ui-monospace, SFMono-Regular, Menlo, monospace; word-break: break-all; }
a { color: #2b6cb0; }
.links a { display: inline-block; margin-right: 8px; white-space: nowrap; }
.status, .verdict { display: inline-block; padding: 1px 8px; border-radius: 10px; font-weight: 600;
                    font-size: 12px; color: #fff; background: var(--none); }
.status.ok, .verdict.ok { background: var(--ok); }
.status.bad, .verdict.bad { background: var(--bad); }
.status.warn, .verdict.warn { background: var(--warn); }
.verdict.none { background: #edf2f7; color: #4a5568; font-weight: 400; }
.problem { color: var(--bad); font-weight: 600; }
td.check svg, dd.check svg { display: block; margin-top: 3px; }
.when { color: #718096; font-size: 11px; margin-left: 4px; }
.banner { padding: 8px 12px; border-radius: 4px; margin: 8px 0; }
.banner.bad { background: #fff5f5; border: 1px solid #feb2b2; color: #742a2a; }
.banner.ok { background: #f0fff4; border: 1px solid #9ae6b4; color: #22543d; }
.where, .record, .hint, .empty, .crumbs { color: #4a5568; }
dl.facts { display: grid; grid-template-columns: 140px 1fr; gap: 4px 12px; background: #fff; padding: 10px 12px;
           border: 1px solid #e2e8f0; border-radius: 6px; }
dl.facts dt { color: #4a5568; font-weight: 600; }
dl.facts dd { margin: 0; }
form.revoke { background: #fff; border: 1px solid #feb2b2; border-radius: 6px; padding: 10px 12px; max-width: 720px; }
form.revoke input[type=text] { display: block; width: 100%; margin: 4px 0 8px; padding: 5px 8px;
                               border: 1px solid #cbd5e0; border-radius: 4px; }
form.revoke button { background: var(--bad); color: #fff; border: 0; border-radius: 4px; padding: 6px 14px;
                     font-weight: 600; cursor: pointer; }
"""

ICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="#4a5568" stroke-width="2" '
    'stroke-linecap="round" stroke-linejoin="round"><path d="M12 2 3 6v6c0 5 3.8 9.3 9 10 5.2-.7 9-5 9-10V6z"/>'
    '<path d="m9 12 2 2 4-4"/></svg>'
)
