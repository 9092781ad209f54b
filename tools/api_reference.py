"""Sphinx extension for the book's API reference page (book/api.md): a table of the package's
public names, and cross-references that land on the names the page documents.

Loaded through `sphinx.local_extensions` in _config.yml. It adds

- the directive ``api-table``: one line per public name, ``name  chapter-document  [what]``
  (``fit  07_training``, ``fast.fit  appendix_performance``, ``stats  07_training``), rendered as
  a table of ``mm.name(signature)`` linked to the name's entry on the page, the first sentence of
  its docstring (or ``what`` for a constant without one), and a link to the chapter (``-``: the
  page that will explain it is not in the book yet). Signatures come from ``inspect`` without
  type annotations (the entries below the table show them in full); nothing is executed but the
  package's import. A name without an entry on the page fails the nitpicky build.
- a ``missing-reference`` handler for the Python domain. The package documents a name where the
  reader uses it (``mmoe_annotated.fit``, not ``mmoe_annotated.train.loop.fit``), while its
  docstrings cross-reference the defining modules. A reference that names a real object (an
  importable dotted path, or a name the docstring's module can see, such as ``pd.DataFrame``)
  links to the page's entry for the same object when there is one, and prints as code otherwise.
  A reference that names nothing still fails the nitpicky (-n) build: that is a docstring typo.
"""
from __future__ import annotations

import importlib
import inspect
import re
import sys
import types

from docutils import nodes
from docutils.parsers.rst import Directive, directives
from sphinx import addnodes

PACKAGE = "mmoe_annotated"


def resolve(dotted: str, module: str | None = None):
    """The object a dotted name refers to, seen from ``module`` (None when it names nothing)."""
    candidates = []
    if module:
        candidates.append((module, dotted))
    candidates.append((None, dotted))
    for mod_name, name in candidates:
        head, *rest = name.split(".")
        try:
            if mod_name is not None:
                scope = vars(importlib.import_module(mod_name))
                if head not in scope:
                    continue
                obj = scope[head]
            else:
                obj = importlib.import_module(head)
        except Exception:  # noqa: BLE001 - anything that fails to import names nothing
            continue
        path = head
        ok = True
        for part in rest:
            try:
                obj = getattr(obj, part)
            except AttributeError:
                try:
                    obj = importlib.import_module(f"{path}.{part}")
                except Exception:  # noqa: BLE001
                    ok = False
                    break
            path = f"{path}.{part}"
        if ok:
            return obj
    return None


def public_object(name: str):
    """``mm.<name>`` for a dotted name relative to the package (``fast.fit``, ``stats``)."""
    obj = importlib.import_module(PACKAGE)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def documented_target(name: str, obj) -> str:
    """The full name under which the page documents ``mm.<name>`` (its autodoc entry)."""
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    return f"{PACKAGE}.{name}"


def signature(name: str, obj, app=None) -> str:
    """``mm.name(a, b=1, *, c=None)``: the call signature without annotations (defaults as
    the source writes them when ``app`` has autodoc_preserve_defaults on)."""
    label = f"mm.{name}"
    if app is not None and app.config.autodoc_preserve_defaults and callable(obj):
        from sphinx.ext.autodoc.preserve_defaults import update_defvalue
        target = obj.__init__ if isinstance(obj, type) and "__init__" in vars(obj) else obj
        try:
            update_defvalue(app, target, False)
        except Exception:  # noqa: BLE001 - the values then show as Python prints them
            pass
    if isinstance(obj, types.ModuleType):
        return label
    if not callable(obj):
        if isinstance(obj, dict):  # {'mmoe': MMoE, ...}: names, not reprs, of classes
            text = "{" + ", ".join(f"{k!r}: {getattr(v, '__name__', repr(v))}"
                                   for k, v in obj.items()) + "}"
        else:
            text = repr(obj)
        return f"{label} = {text if len(text) <= 40 else text[:37] + '...'}"
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return f"{label}(...)"
    params = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()]
    return label + str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))


def constant_doc(name: str, obj) -> list[str]:
    """The ``#:`` comment above a constant where the package defines it ([] if none)."""
    from sphinx.pycode import ModuleAnalyzer

    attr = name.rsplit(".", 1)[-1]
    for mod_name, module in sorted(sys.modules.items()):
        if not mod_name.startswith(PACKAGE) or vars(module).get(attr, _MISSING) is not obj:
            continue
        try:
            docs = ModuleAnalyzer.for_module(mod_name).find_attr_docs()
        except Exception:  # noqa: BLE001 - a module without source
            continue
        if ("", attr) in docs:
            return [line for line in docs[("", attr)]]
    return []


def summary(obj, name: str = "") -> str:
    """The first sentence of the object's docstring (a constant's ``#:`` comment), with its
    code as ````code```` (a role's target too) and no other markup."""
    if callable(obj) or isinstance(obj, types.ModuleType):
        doc = inspect.getdoc(obj) or ""
    else:
        doc = "\n".join(constant_doc(name, obj))
    first = doc.strip().split("\n\n")[0].replace("\n", " ")
    first = re.sub(r":\w+:`~([^`<]*?)`", lambda m: f"``{m.group(1).rsplit('.', 1)[-1]}``", first)
    first = re.sub(r":\w+:`([^`<]*?)(?:\s*<[^>]*>)?`", r"``\1``", first)  # :func:`x` -> ``x``
    first = re.sub(r"(?<!\w)\*\*?([^*]+)\*\*?", r"\1", first)
    m = re.match(r"((?:``.*?``|.)+?[.!?])(?:\s|$)", first)
    return (m.group(1) if m else first).strip()


def summary_nodes(text: str) -> list:
    """``text`` as docutils nodes: its ````code```` spans as literals."""
    out = []
    for i, part in enumerate(re.split(r"``(.*?)``", text)):
        if part:
            out.append(nodes.literal(text=part) if i % 2 else nodes.Text(part))
    return out


class ApiTable(Directive):
    """``name  chapter`` per line -> a table: name and signature, summary, chapter."""

    has_content = True
    option_spec = {"class": directives.class_option}

    def run(self):
        env = self.state.document.settings.env
        rows = []
        for lineno, line in enumerate(self.content, start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.split(None, 2)
            if len(parts) < 2:
                raise self.error(f"api-table line {lineno}: expected 'name chapter [what]', "
                                 f"got {line!r}")
            rows.append((parts[0], parts[1], parts[2] if len(parts) > 2 else ""))

        table = nodes.table(classes=["api-table", *self.options.get("class", [])])
        group = nodes.tgroup(cols=3)
        table += group
        for width in (45, 40, 15):
            group += nodes.colspec(colwidth=width)
        head = nodes.thead()
        group += head
        head += self._row([[nodes.Text("name and signature")], [nodes.Text("what")],
                           [nodes.Text("chapter")]])
        body = nodes.tbody()
        group += body
        for name, chapter, what in rows:
            try:
                obj = public_object(name)
            except AttributeError:
                raise self.error(f"api-table: mm.{name} does not exist")
            # api_table: a name without an entry on the page fails the build (missing_reference)
            ref = addnodes.pending_xref("", refdomain="py", reftype="obj",
                                        reftarget=documented_target(name, obj), refexplicit=True,
                                        refwarn=True, refdoc=env.docname, api_table=True)
            ref += nodes.literal(text=signature(name, obj, env.app))
            if chapter == "-":  # the chapter that will explain it is not in the book yet
                doc = nodes.Text("\u2014")
            else:
                doc = addnodes.pending_xref("", refdomain="std", reftype="doc", reftarget=chapter,
                                            refexplicit=False, refwarn=True, refdoc=env.docname)
                doc += nodes.inline(text=chapter)
            body += self._row([ref, summary_nodes(summary(obj, name) or what), doc])
        return [table]

    @staticmethod
    def _row(cells):
        row = nodes.row()
        for content in cells:
            entry = nodes.entry()
            entry += nodes.paragraph("", "", *(content if isinstance(content, list) else [content]))
            row += entry
        return row


LINKABLE = (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType)


def _linkable(obj) -> bool:
    return isinstance(obj, LINKABLE) or inspect.isroutine(obj)


def _same(a, b) -> bool:
    if not (_linkable(a) and _linkable(b)):
        return False  # values (ints, tuples) are not identities: never link by value
    return a is b or (inspect.isfunction(a) and inspect.isfunction(b) and a.__code__ is b.__code__)


_INDEX: dict = {"size": -1, "entries": []}


def _documented(domain):
    """[(object, full name)] of every Python object the build documents (cached per size)."""
    if _INDEX["size"] != len(domain.objects):
        entries = []
        for full, entry in domain.objects.items():
            if not entry.aliased:
                obj = resolve(full)
                if obj is not None and _linkable(obj):
                    entries.append((obj, full))
        _INDEX.update(size=len(domain.objects), entries=entries)
    return _INDEX["entries"]


def _docstring_scopes(node):
    """Modules and classes in which a docstring's short names resolve: autodoc marks a
    docstring's lines as coming from "docstring of <dotted name>", the object it belongs to."""
    m = re.search(r"docstring of (\S+)", str(node.source or ""))
    if not m:
        return []
    owner = resolve(m.group(1))
    scopes = []
    if owner is not None:
        module = getattr(owner, "__module__", None) if not isinstance(owner, types.ModuleType) \
            else owner.__name__
        qual = getattr(owner, "__qualname__", "")
        if module:
            scopes.append((module, None))
            if "." in qual:  # a method: its class's names too
                scopes.append((module, qual.rsplit(".", 1)[0]))
    return scopes


def missing_reference(app, env, node, contnode):
    """Resolve a Python-domain reference to the object it names (see the module docstring)."""
    if node.get("refdomain") != "py" or node.get("api_table"):
        return None
    target = node.get("reftarget", "").lstrip(".~")
    scopes = [(node.get("py:module"), node.get("py:class"))] + _docstring_scopes(node)
    obj = None
    for module, cls in scopes:
        obj = resolve(target, module)
        if obj is None and cls:
            obj = resolve(f"{cls}.{target}", module)
        if obj is not None:
            break
    if obj is None:
        return None  # names nothing: the nitpicky build reports it
    domain = env.get_domain("py")
    for documented, full in _documented(domain):
        if _same(documented, obj):
            return domain.resolve_xref(env, node["refdoc"], app.builder, "obj", full, node,
                                       contnode)
    return contnode  # a real object the page does not document: code, without a link


def data_docstring(app, what, name, obj, options, lines):
    """A constant's docstring is its ``#:`` comment where the package defines it; never the
    docstring of its type (``dict``'s, ``tuple``'s), which autodoc shows otherwise."""
    if what != "data":
        return
    doc = constant_doc(name, obj)
    if doc:
        lines[:] = doc
    elif "\n".join(lines).strip() == inspect.cleandoc(type(obj).__doc__ or ""):
        lines[:] = []


_MISSING = object()


def setup(app):
    app.add_directive("api-table", ApiTable)
    app.connect("missing-reference", missing_reference)
    app.connect("autodoc-process-docstring", data_docstring)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
