"""The Registry page's HTML: every stored value escaped, every link built from encoded segments, no script."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

from airlock.ui import render
from airlock.ui.trend import trend_svg
from airlock.ui.views import Artifact, CheckPoint, CheckTrend, ModelView, RegistryView, VersionView

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)> "quoted" \'single\' &amp;'
BIDI = "team-\u202eevil"  # a right-to-left override: would display as another name
CTX = render.PageContext(base="/registry", airflow_base="/", user='ad"min<', may_revoke=True, csrf_token="tok")
AT = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


class _Collector(HTMLParser):
    """Every element and attribute the browser would build from the page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(html: str) -> _Collector:
    collector = _Collector()
    collector.feed(html)
    return collector


def _version(**overrides) -> VersionView:
    points = (CheckPoint(AT, "pass", "registry", "ok", "watch"),
              CheckPoint(AT + timedelta(hours=1), "fail", HOSTILE, HOSTILE, "watch"))
    fields = dict(
        model="demo/tiny-gpt2", version="1", status="approved", owner=HOSTILE, risk_tier="high",
        source="hf://demo/tiny-gpt2", source_revision="0" * 40, root_digest="a" * 64, approver=BIDI,
        promoted_at=AT, promoted_by='airflow:model_ingest/run"/../x?<y>', signing_key="airlock-model-signing:v1",
        status_reason=HOSTILE, integrity=CheckTrend("integrity", points, 2),
        artifacts=(Artifact("models/demo/tiny-gpt2/1/aibom.cdx.json", "aibom", "b" * 64, True),
                   Artifact("incidents/demo/tiny-gpt2/1/<b>&.md", "incident", None, False)),
    )
    fields.update(overrides)
    return VersionView(**fields)


def _model(version: VersionView) -> ModelView:
    return ModelView(name="demo/tiny-gpt2", owner=HOSTILE, risk_tier="high", source=HOSTILE, verified=True,
                     problem=HOSTILE, versions=(version,))


def _assert_inert(html: str) -> None:
    parsed = _parse(html)
    assert "script" not in parsed.tags and "img" not in parsed.tags
    assert not [name for name, _ in parsed.attrs if name.startswith("on")]
    assert "<script" not in html and "onerror=" not in html.replace("onerror=alert(1)&gt;", "")


def test_index_escapes_stored_text_everywhere() -> None:
    html = render.render_index(RegistryView("file:///r", (_model(_version()),), problem=HOSTILE, query=HOSTILE), CTX)
    _assert_inert(html)
    text = "".join(_parse(html).text)
    assert HOSTILE in text  # shown, as text
    assert "team-\\u202eevil" in text and "\u202e" not in html  # the override is made visible, not obeyed
    assert 'ad"min<' in text
    # The filter box holds the query as a value, not as markup.
    assert ("value", HOSTILE) in _parse(html).attrs


def test_version_page_escapes_and_carries_the_form_token() -> None:
    html = render.render_version(_model(_version()), _version(), CTX)
    _assert_inert(html)
    parsed = _parse(html)
    assert ("name", "csrf_token") in parsed.attrs and ("value", "tok") in parsed.attrs
    assert ("action", "/registry/models/demo/tiny-gpt2/versions/1/revoke") in parsed.attrs
    assert HOSTILE in "".join(parsed.text)


def test_links_are_built_from_encoded_segments() -> None:
    version = _version()
    hrefs = [value for name, value in _parse(render.render_version(_model(version), version, CTX)).attrs
             if name == "href"]
    run = next(h for h in hrefs if h.startswith("/dags/"))
    assert run == "/dags/model_ingest/runs/run%22%2F..%2Fx%3F%3Cy%3E"  # one segment, nothing interpreted
    incident = next(h for h in hrefs if "incidents" in h)
    assert incident == ("/registry/models/demo/tiny-gpt2/versions/1/download?"
                        "key=incidents%2Fdemo%2Ftiny-gpt2%2F1%2F%3Cb%3E%26.md")
    assert all(h.startswith(("/registry/", "/dags/")) for h in hrefs)


def test_revoke_form_only_for_admins_and_revocable_versions() -> None:
    viewer = render.PageContext(base="/registry", airflow_base="/", user="op", may_revoke=False, csrf_token=None)
    version = _version()
    assert "<form class=\"revoke\"" not in render.render_version(_model(version), version, viewer)
    assert "Only administrators may revoke" in render.render_version(_model(version), version, viewer)
    revoked = _version(status="revoked")
    assert "<form class=\"revoke\"" not in render.render_version(_model(revoked), revoked, CTX)
    assert "<form class=\"revoke\"" in render.render_version(_model(version), version, CTX)


def test_no_checks_yet_is_said_not_drawn() -> None:
    version = _version(integrity=CheckTrend("integrity"))
    html = render.render_index(RegistryView("file:///r", (_model(version),)), CTX)
    assert html.count("no checks yet") == 2 and "<svg" not in html


def test_trend_svg_is_escaped_and_positions_by_time() -> None:
    points = [CheckPoint(AT, "pass", "registry", "ok", "w"),
              CheckPoint(AT + timedelta(hours=1), "pass", "registry", "ok", "w"),
              CheckPoint(AT + timedelta(hours=4), "fail", "registry", '</title><script>x</script>', "w")]
    svg = str(trend_svg(points, label="integrity checks"))
    assert "<script>" not in svg and "&lt;/title&gt;&lt;script&gt;" in svg
    xs = [float(x) for x in re.findall(r'<circle cx="([0-9.]+)"', svg)]
    assert xs[0] < xs[1] < xs[2] and (xs[1] - xs[0]) < (xs[2] - xs[1])  # spaced by time, not by index
    ys = re.findall(r'<circle cx="[0-9.]+" cy="([0-9]+)"', svg)
    assert ys[0] == ys[1] != ys[2]  # a failure drops
    assert 'aria-label="integrity checks: 2 of 3 checks passed"' in svg
    assert str(trend_svg([], label="x")) == ""
