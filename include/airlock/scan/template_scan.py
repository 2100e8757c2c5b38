"""Chat templates (GGUF metadata, tokenizer_config.json, ``*.jinja``): an allowlist over the parsed Jinja AST.

Hugging Face renders templates in Jinja's sandbox, but other loaders have used a plain
``jinja2.Environment`` (CVE-2024-34359 in llama-cpp-python), where ``{{ x.__class__.__mro__ }}``
walks to ``os.popen``. Pattern checks miss the indirect forms: Jinja's ``getitem`` falls back to
``getattr`` for string keys, so ``x[k]`` with ``k`` built at render time (``"_" ~ "_" ~ "class"
...``) reaches the same internals. So the template is parsed - never rendered - with the
extensions transformers parses it with, and every node must be one real chat templates use:

* output, ``if``/``elif``/``else``, ``for`` (with ``loop.*``, ``break``/``continue``), ``set``
  (incl. ``namespace()`` attributes), macros called from the template, ``{% generation %}``;
* attribute access to names not starting with ``_``; subscripts whose key is a literal
  (non-underscore string, integer), a slice, or an integer expression (``loop.index0 + 1``,
  ``messages|length - 1``, a variable only ever set to such values);
* calls of ``raise_exception``, ``namespace``, ``range``, ``strftime_now``, the template's own
  macros and a few str/dict methods; the harmless built-in tests and filters, with literal,
  non-underscore ``attribute=`` arguments.

Two findings: ``template.python_internals`` (always blocks) when the template names Python
internals outright - an underscore attribute or literal key, a dunder string (also one built by
concatenating literals), ``|attr('_...')``, the globals that expose module namespaces;
``template.not_allowlisted`` (flag at low/medium, block at high/critical: the tier's
``remote_code`` action) for every other construct outside the allowlist, such as a computed key.
A template that does not parse blocks: the loader would not render it either, and a renderer
with another grammar (llama.cpp's minja, other Jinja versions) might, so it cannot be vouched for.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from airlock.scan.context import Blob, ScanContext

# Jinja/Flask globals whose attributes lead to Python modules (e.g. lipsum.__globals__).
_GADGET_NAMES = frozenset(
    {"lipsum", "cycler", "joiner", "self", "config", "request", "url_for", "get_flashed_messages"}
)
# Globals transformers (and vLLM, llama-cpp-python) define, Jinja's harmless ones, and names
# Jinja binds itself inside macros, call blocks and recursive loops.
_FUNCTIONS = frozenset({"raise_exception", "namespace", "range", "strftime_now", "dict", "caller", "loop"})
# str / dict methods real templates call (content.split('</think>'), tool.items(), ...).
_METHODS = frozenset(
    {
        "strip", "lstrip", "rstrip", "split", "rsplit", "splitlines", "startswith", "endswith",
        "upper", "lower", "title", "capitalize", "replace", "find", "count", "join",
        "items", "keys", "values", "get",
    }
)  # fmt: skip
# Built-in filters that compute on values without reaching attributes by a computed name.
# Not here: attr (getattr by name), format (printf-style formatting of arbitrary objects; chat
# templates concatenate instead), pprint, random.
_FILTERS = frozenset(
    {
        "abs", "batch", "capitalize", "center", "count", "d", "default", "dictsort", "e", "escape",
        "filesizeformat", "first", "float", "forceescape", "groupby", "indent", "int", "items", "join",
        "last", "length", "list", "lower", "map", "max", "min", "reject", "rejectattr", "replace",
        "reverse", "round", "safe", "select", "selectattr", "slice", "sort", "string", "striptags",
        "sum", "title", "tojson", "trim", "truncate", "unique", "upper", "urlencode", "wordcount",
        "wordwrap",
    }
)  # fmt: skip
_TESTS = frozenset(
    {
        "!=", "<", "<=", "==", ">", ">=", "boolean", "callable", "defined", "divisibleby", "eq",
        "equalto", "escaped", "even", "false", "float", "ge", "greaterthan", "gt", "in", "integer",
        "iterable", "le", "lessthan", "lower", "lt", "mapping", "ne", "none", "number", "odd",
        "sameas", "sequence", "string", "true", "undefined", "upper",
    }
)  # fmt: skip
# Filters that read attributes by a name given as an argument: (positional index, keyword).
_ATTRIBUTE_ARGS: dict[str, tuple[int | None, str]] = {
    "map": (None, "attribute"),
    "selectattr": (0, "attribute"),
    "rejectattr": (0, "attribute"),
    "groupby": (0, "attribute"),
    "sort": (2, "attribute"),
    "unique": (1, "attribute"),
    "min": (1, "attribute"),
    "max": (1, "attribute"),
    "sum": (0, "attribute"),
    "join": (1, "attribute"),
}
_LOOP_INTEGERS = frozenset({"index", "index0", "revindex", "revindex0", "length", "depth", "depth0"})
MAX_REASONS = 5


@dataclass
class TemplateReview:
    """Why a template falls outside the allowlist: Python internals named outright, other constructs."""

    internals: list[str] = field(default_factory=list)
    not_allowlisted: list[str] = field(default_factory=list)


def _environment() -> Any:
    """A parse-only environment with transformers' grammar: loop controls and ``{% generation %}``."""
    from jinja2 import Environment, nodes
    from jinja2.ext import Extension

    class Generation(Extension):
        # transformers' AssistantTracker: ``{% generation %}...{% endgeneration %}`` marks assistant
        # tokens. Parsed here into a plain scope so the body is checked like any other.
        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.Scope(body, lineno=lineno)

    return Environment(extensions=["jinja2.ext.loopcontrols", Generation])


def review_template(source: str) -> TemplateReview:
    """Check ``source`` against the allowlist; raises ValueError if it does not parse."""
    from jinja2 import TemplateSyntaxError

    try:
        tree = _environment().parse(source)
        return _Checker(tree).run()
    except TemplateSyntaxError as exc:
        raise ValueError(f"line {exc.lineno}: {exc.message}") from None
    except RecursionError:
        raise ValueError("nested too deeply to parse") from None


def template_problems(source: str) -> list[str]:
    """Every reason ``source`` falls outside the allowlist (empty if none); ValueError if unparsable."""
    review = review_template(source)
    return review.internals + review.not_allowlisted


class _Checker:
    """Walks the AST with the ``for`` loops enclosing each node (up to the nearest macro or call block).

    Keys are judged by what the template itself guarantees at that point, never by what a
    variable was set to elsewhere: a name read before its ``set``, outside the loop that set it
    or in a branch not taken is whatever the render context holds - and servers pass
    request-supplied variables into that context (``chat_template_kwargs``).
    """

    def __init__(self, tree: Any) -> None:
        from jinja2 import nodes

        self.n = nodes
        self.tree = tree
        self.review = TemplateReview()
        self.macros = {m.name for m in tree.find_all(nodes.Macro)}
        # Names the template binds other than as a loop target: their value at a use is not certain.
        self.rebound: set[str] = set()
        for node in tree.find_all((nodes.Assign, nodes.AssignBlock, nodes.With, nodes.Macro, nodes.CallBlock)):
            targets = (
                [node.target]
                if isinstance(node, (nodes.Assign, nodes.AssignBlock))
                else node.targets
                if isinstance(node, nodes.With)
                else node.args
            )
            for target in targets:
                self.rebound.update(name.name for name in _names(target))
        self.loop_targets: set[str] = set()
        for loop in tree.find_all(nodes.For):
            self.loop_targets.update(name.name for name in _names(loop.target))

    # ------------------------------------------------------------------ keys

    def _loop_binding(self, name: str, scope: tuple[Any, ...]) -> Any | None:
        """The iterable of the innermost enclosing loop whose target is exactly ``name``."""
        n = self.n
        if name in self.rebound:
            return None
        for loop in reversed(scope):
            if isinstance(loop.target, n.Name) and loop.target.name == name:
                return loop.iter
            if name in {t.name for t in _names(loop.target)}:
                return None  # unpacked from the items: values not known
        return None

    def _is_int(self, node: Any, scope: tuple[Any, ...]) -> bool:
        """``node`` can only evaluate to an integer (never to a string that reaches an attribute)."""
        n = self.n
        if isinstance(node, n.Const):
            return isinstance(node.value, int) and not isinstance(node.value, bool)
        if isinstance(node, (n.Neg, n.Pos)):
            return self._is_int(node.node, scope)
        if isinstance(node, (n.Add, n.Sub, n.Mul, n.FloorDiv, n.Mod)):
            return self._is_int(node.left, scope) and self._is_int(node.right, scope)
        if isinstance(node, n.CondExpr):
            return node.expr2 is not None and self._is_int(node.expr1, scope) and self._is_int(node.expr2, scope)
        if isinstance(node, n.Filter):
            return node.name in ("length", "count", "int")  # len() / int() whatever their input
        if isinstance(node, n.Getattr) and isinstance(node.node, n.Name) and node.node.name == "loop":
            # Inside a loop body ``loop`` is Jinja's loop context; elsewhere, the render context's.
            unbound = "loop" not in self.rebound and "loop" not in self.loop_targets
            return bool(scope) and unbound and node.attr in _LOOP_INTEGERS
        if isinstance(node, n.Name):
            iterable = self._loop_binding(node.name, scope)
            return (
                isinstance(iterable, n.Call)
                and isinstance(iterable.node, n.Name)
                and iterable.node.name == "range"
                and "range" not in self.rebound
            ) or (isinstance(iterable, (n.List, n.Tuple)) and all(self._is_int(i, scope) for i in iterable.items))
        return False

    def _is_safe_key(self, node: Any, scope: tuple[Any, ...]) -> bool:
        """A key that cannot be a string starting with ``_``: a literal, an integer expression, or a
        loop variable running over a literal list of such keys."""
        n = self.n
        if self._is_int(node, scope):
            return True
        if isinstance(node, n.Const):
            return isinstance(node.value, str) and not node.value.startswith("_")
        if isinstance(node, n.CondExpr):
            return (
                node.expr2 is not None and self._is_safe_key(node.expr1, scope) and self._is_safe_key(node.expr2, scope)
            )
        if isinstance(node, n.Name):
            iterable = self._loop_binding(node.name, scope)
            return isinstance(iterable, (n.List, n.Tuple)) and all(self._is_safe_key(i, ()) for i in iterable.items)
        return False

    # ------------------------------------------------------------------ the walk

    def run(self) -> TemplateReview:
        n = self.n
        stack: list[tuple[Any, tuple[Any, ...]]] = [(self.tree, ())]
        while stack:
            node, scope = stack.pop()
            self._check(node, scope)
            if not isinstance(node, n.Node):
                continue
            if isinstance(node, n.For):
                inner = (*scope, node)
                stack.append((node.iter, scope))
                stack.extend((child, scope) for child in node.else_)
                stack.append((node.target, inner))
                if node.test is not None:
                    stack.append((node.test, inner))
                stack.extend((child, inner) for child in node.body)
            elif isinstance(node, (n.Macro, n.CallBlock)):
                # a macro's body runs where it is called, not inside the loops around its definition
                children = list(node.iter_child_nodes())
                body = set(map(id, node.body))
                stack.extend((child, () if id(child) in body else scope) for child in children)
            else:
                stack.extend((child, scope) for child in node.iter_child_nodes())
        return self.review

    def _internal(self, what: str, node: Any) -> None:
        self.review.internals.append(f"{what} (line {node.lineno})")

    def _outside(self, what: str, node: Any) -> None:
        self.review.not_allowlisted.append(f"{what} (line {node.lineno})")

    def _check(self, node: Any, scope: tuple[Any, ...]) -> None:
        n = self.n
        allowed = (
            n.Template, n.Output, n.TemplateData, n.For, n.If, n.Assign, n.AssignBlock, n.Macro, n.CallBlock,
            n.FilterBlock, n.With, n.Scope, n.Continue, n.Break, n.Name, n.Const, n.List, n.Tuple, n.Dict, n.Pair,
            n.Keyword, n.CondExpr, n.Concat, n.Compare, n.Operand, n.Add, n.Sub, n.Mul, n.Div, n.FloorDiv, n.Mod,
            n.And, n.Or, n.Not, n.Neg, n.Pos, n.Slice, n.Getattr, n.Getitem, n.Call, n.Filter, n.Test, n.NSRef,
        )  # fmt: skip
        if not isinstance(node, allowed):
            self._outside(_describe(node), node)
            return
        if isinstance(node, n.Name):
            if node.ctx == "load" and node.name in _GADGET_NAMES:
                self._internal(f"global {node.name!r}", node)
        elif isinstance(node, n.Const):
            if isinstance(node.value, str) and "__" in node.value:
                self._internal(f"dunder string {node.value[:40]!r}", node)
        elif isinstance(node, (n.Concat, n.Add)):
            folded = _fold(node)
            if folded is not None and "__" in folded:
                self._internal(f"dunder string built from literals {folded[:40]!r}", node)
        elif isinstance(node, (n.Getattr, n.NSRef)):
            if node.attr.startswith("_"):
                self._internal(f"attribute .{node.attr}", node)
        elif isinstance(node, n.Getitem):
            self._check_subscript(node, scope)
        elif isinstance(node, n.Call):
            self._check_call(node)
        elif isinstance(node, n.CallBlock):
            call = node.call
            if not (isinstance(call.node, n.Name) and call.node.name in self.macros):
                self._outside("{% call %} of something other than one of the template's macros", node)
        elif isinstance(node, n.Filter):
            self._check_filter(node)
        elif isinstance(node, n.Test):
            if node.name not in _TESTS:
                self._outside(f"test {node.name!r}", node)
            if node.dyn_args is not None or node.dyn_kwargs is not None:
                self._outside(f"test {node.name!r} with *args/**kwargs", node)

    def _check_subscript(self, node: Any, scope: tuple[Any, ...]) -> None:
        n = self.n
        key = node.arg
        if isinstance(key, n.Slice):
            return  # a slice object never reaches getattr
        folded = _fold(key)
        if folded is not None and folded.startswith("_"):
            self._internal(f"item [{folded[:40]!r}]", node)
        elif not self._is_safe_key(key, scope):
            self._outside("subscript with a computed key (Jinja falls back to getattr for string keys)", node)

    def _check_call(self, node: Any) -> None:
        n = self.n
        callee = node.node
        if node.dyn_args is not None or node.dyn_kwargs is not None:
            self._outside("call with *args/**kwargs", node)
        if isinstance(callee, n.Name):
            if callee.name in self.rebound or callee.name in self.loop_targets:
                self._outside(f"call of {callee.name!r}, a name the template assigns", node)
            elif callee.name not in _FUNCTIONS and callee.name not in self.macros:
                self._outside(f"call of {callee.name!r}", node)
        elif isinstance(callee, n.Getattr):
            if callee.attr not in _METHODS:
                self._outside(f"call of method .{callee.attr}()", node)
        else:
            self._outside(f"call of a computed {type(callee).__name__.lower()}", node)

    def _check_filter(self, node: Any) -> None:
        name = node.name
        if node.dyn_args is not None or node.dyn_kwargs is not None:
            self._outside(f"filter {name!r} with *args/**kwargs", node)
        if name == "attr":
            folded = _fold(node.args[0]) if node.args else None
            if folded is not None and folded.startswith("_"):
                self._internal(f"attr filter {folded[:40]!r}", node)
            else:
                self._outside("attr filter (getattr by name)", node)
            return
        if name not in _FILTERS:
            self._outside(f"filter {name!r}", node)
            return
        position, keyword = _ATTRIBUTE_ARGS.get(name, (None, ""))
        attribute = next((kw.value for kw in node.kwargs if kw.key == keyword), None) if keyword else None
        if attribute is None and position is not None and len(node.args) > position:
            attribute = node.args[position]
        if attribute is not None:
            self._check_attribute_name(name, attribute, node)
        if name in ("select", "reject") and node.args:
            self._check_named(name, node.args[0], _TESTS, "test", node)
        elif name in ("selectattr", "rejectattr") and len(node.args) > 1:
            self._check_named(name, node.args[1], _TESTS, "test", node)
        elif name == "map" and attribute is None and node.args:
            self._check_named(name, node.args[0], _FILTERS - {"map"}, "filter", node)

    def _check_attribute_name(self, filter_name: str, attribute: Any, node: Any) -> None:
        n = self.n
        if (
            isinstance(attribute, n.Const)
            and isinstance(attribute.value, int)
            and not isinstance(attribute.value, bool)
        ):
            return
        folded = _fold(attribute)
        if folded is None:
            self._outside(f"{filter_name} filter with a computed attribute name", node)
        elif any(part.startswith("_") for part in folded.split(".")):
            self._internal(f"{filter_name} filter reads attribute {folded[:40]!r}", node)

    def _check_named(self, filter_name: str, arg: Any, allowed: frozenset[str], kind: str, node: Any) -> None:
        folded = _fold(arg)
        if folded is None or folded not in allowed:
            self._outside(f"{filter_name} filter applying {kind} {folded!r}", node)


def _describe(node: Any) -> str:
    names = {
        "Include": "{% include %}", "Import": "{% import %}", "FromImport": "{% from ... import %}",
        "Extends": "{% extends %}", "Block": "{% block %}", "ExprStmt": "{% do %}", "Pow": "the ** operator",
    }  # fmt: skip
    kind = type(node).__name__
    return names.get(kind, f"Jinja construct {kind}")


def _fold(node: Any) -> str | None:
    """The string a literal or a concatenation of literals evaluates to (None if not constant)."""
    from jinja2 import nodes

    if isinstance(node, nodes.Const):
        return node.value if isinstance(node.value, str) else None
    if isinstance(node, nodes.Concat):
        parts = [_fold_any(part) for part in node.nodes]
        return None if any(p is None for p in parts) else "".join(parts)  # type: ignore[arg-type]
    if isinstance(node, nodes.Add):
        left, right = _fold(node.left), _fold(node.right)
        return None if left is None or right is None else left + right
    return None


def _fold_any(node: Any) -> str | None:
    from jinja2 import nodes

    if isinstance(node, nodes.Const) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return str(node.value)  # ``~`` turns numbers into strings
    return _fold(node)


def _names(target: Any) -> Iterator[Any]:
    """The Name nodes an assignment target binds (``a``, ``a, b``, ``(a, (b, c))``)."""
    from jinja2 import nodes

    if isinstance(target, nodes.Name):
        yield target
    elif isinstance(target, nodes.Tuple):
        for item in target.items:
            yield from _names(item)


def check_template(ctx: ScanContext, blob: Blob, source: str, label: str) -> None:
    where = ctx.where(blob)
    try:
        review = review_template(source)
    except ValueError as exc:
        ctx.hit("template.unparsable", f"{where}: {label} is not valid Jinja: {exc}", blob)
        return
    for rule, reasons, verb in (
        ("template.python_internals", review.internals, "reaches Python internals"),
        ("template.not_allowlisted", review.not_allowlisted, "uses Jinja outside the chat-template allowlist"),
    ):
        if reasons:
            more = f" (+{len(reasons) - MAX_REASONS} more)" if len(reasons) > MAX_REASONS else ""
            ctx.hit(rule, f"{where}: {label} {verb}: {'; '.join(reasons[:MAX_REASONS])}{more}", blob)
