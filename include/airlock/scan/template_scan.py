"""Chat templates (GGUF metadata, tokenizer_config.json, ``*.jinja``): Jinja that reaches Python.

Hugging Face renders templates in Jinja's sandbox, but other loaders have used a plain
``jinja2.Environment`` (CVE-2024-34359 in llama-cpp-python), where ``{{ x.__class__.__mro__ }}``
walks to ``os.popen``. The template is parsed - never rendered - and the AST is checked for the
constructs such payloads need: attribute or item access to underscore names, the ``attr``
filter, subscripts built by string concatenation, dunder strings, and the Jinja globals that
expose module globals. A template that does not parse blocks (it would not render either).
"""

from __future__ import annotations

from collections.abc import Iterator

from airlock.scan.context import Blob, ScanContext

# Jinja/Flask globals whose attributes lead to Python modules (e.g. lipsum.__globals__).
_GADGET_NAMES = frozenset(
    {"lipsum", "cycler", "joiner", "self", "config", "request", "url_for", "get_flashed_messages"}
)
MAX_REASONS = 5


def template_problems(source: str) -> list[str]:
    """Why ``source`` reaches Python internals (empty if it does not); raises ValueError if unparsable."""
    from jinja2 import Environment, TemplateSyntaxError, nodes

    try:
        tree = Environment(extensions=["jinja2.ext.loopcontrols"]).parse(source)
    except TemplateSyntaxError as exc:
        raise ValueError(f"line {exc.lineno}: {exc.message}") from None
    reasons: list[str] = []
    for node in _walk(tree):
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            reasons.append(f"attribute .{node.attr} (line {node.lineno})")
        elif isinstance(node, nodes.Getitem):
            key = node.arg
            if isinstance(key, nodes.Const) and isinstance(key.value, str) and key.value.startswith("_"):
                reasons.append(f"item [{key.value!r}] (line {node.lineno})")
            elif isinstance(key, (nodes.Concat, nodes.Add, nodes.Mod, nodes.Filter, nodes.Call)):
                reasons.append(f"subscript with a computed key (line {node.lineno})")
        elif isinstance(node, nodes.Filter) and node.name == "attr":
            reasons.append(f"attr filter (line {node.lineno})")
        elif isinstance(node, nodes.Const) and isinstance(node.value, str) and "__" in node.value:
            reasons.append(f"dunder string {node.value[:40]!r} (line {node.lineno})")
        elif isinstance(node, nodes.Name) and node.name in _GADGET_NAMES and node.ctx == "load":
            reasons.append(f"global {node.name!r} (line {node.lineno})")
    return reasons


def _walk(node: object) -> Iterator[object]:
    from jinja2 import nodes

    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        if isinstance(current, nodes.Node):
            stack.extend(current.iter_child_nodes())


def check_template(ctx: ScanContext, blob: Blob, source: str, label: str) -> None:
    where = ctx.where(blob)
    try:
        reasons = template_problems(source)
    except ValueError as exc:
        ctx.hit("template.unparsable", f"{where}: {label} is not valid Jinja: {exc}", blob)
        return
    if reasons:
        more = f" (+{len(reasons) - MAX_REASONS} more)" if len(reasons) > MAX_REASONS else ""
        ctx.hit(
            "template.python_internals",
            f"{where}: {label} reaches Python internals: {'; '.join(reasons[:MAX_REASONS])}{more}",
            blob,
        )
