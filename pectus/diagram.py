"""Process diagrams: an SVG drawing of the unit (P&ID style) whose elements show its tags live.

A UOD declares one with ``UodBuilder.with_process_diagram``; the engine sends it to the aggregator
with the UOD's description, and the unit page draws it and binds its elements to the live values.
Its vocabulary (docs/uod.md, "Process diagram"), on any element:

* ``data-tag="PU01"``: the element stands for the tag PU01. When the tag can be set (an entry or a
  choice), clicking the element, or Enter on it, opens the tag's editor;
* ``data-show="value"`` (a ``text`` or ``tspan``): shows the tag's value with its unit;
  ``data-show="state"``: shows the state word of the element's kind (Open, Running, On...). The
  tag is the element's own ``data-tag`` or that of the nearest element around it;
* ``data-kind="valve" | "pump" | "switch"``: the shapes in it take the state's colour and line
  style (open / closed, running / stopped, on / off) from the tag's value;
* ``data-on="Sample"`` (with ``data-kind``): the element is on exactly when the value is that text
  (one leg of a selector valve), instead of the usual reading of the value.

Invariants of :func:`read_diagram` (and so of :func:`sanitize`, which the aggregator applies again
to whatever an engine sends):

* the text is parsed by defusedxml's parser: a DOCTYPE (and with it every entity declaration) is
  refused, so no entity expands and nothing outside the text is read; text over
  ``MAX_DIAGRAM_CHARS``, with more than ``MAX_ELEMENTS`` elements or nested deeper than
  ``MAX_DEPTH`` is refused;
* the output is a well-formed SVG document made only of the elements and attributes allowed below,
  written by this module (never a serialiser's pass-through): no script, ``foreignObject``,
  ``style`` element, image, link, animation or filter survives, nor any event handler attribute;
  ``href`` only ever points at ``#fragment`` in the drawing; ``url(...)`` in an attribute or a
  ``style`` declaration only ever at ``#fragment``; a ``style`` attribute keeps only drawing
  properties (so a diagram cannot cover or restyle the page around it);
* every ``id`` starts with ``pd-`` (added, and added to what refers to it), so the drawing's ids
  never collide with the page's; sanitising a sanitised diagram changes nothing;
* what is removed is listed with its SVG line (``Diagram.removed``), and the vocabulary's misuse
  too (``Diagram.problems``); tag names are checked by the UOD, which knows its tags.

This module does no I/O.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
from defusedxml.ElementTree import DefusedXMLParser

__all__ = ["Binding", "Diagram", "DiagramError", "KINDS", "MAX_DEPTH", "MAX_DIAGRAM_CHARS", "MAX_ELEMENTS", "Removal",
           "SHOWS", "read_diagram", "sanitize"]

MAX_DIAGRAM_CHARS = 256 * 1024
MAX_ELEMENTS = 5_000
MAX_DEPTH = 100  # elements inside elements; drawings nest a few levels, the writer recurses
ID_PREFIX = "pd-"
SHOWS = ("value", "state")
KINDS = ("valve", "pump", "switch")

SVG = "http://www.w3.org/2000/svg"
XLINK = "http://www.w3.org/1999/xlink"

# Drawing only: what cannot run, load, link or animate anything.
ELEMENTS = frozenset({
    "svg", "g", "defs", "symbol", "use", "title", "desc", "path", "rect", "circle", "ellipse", "line", "polyline",
    "polygon", "text", "tspan", "marker", "linearGradient", "radialGradient", "stop", "clipPath", "pattern"})
# Drawing editors' own data, dropped without a word: it never draws anything.
EDITOR_DATA = frozenset({"metadata"})
EDITOR_NAMESPACES = ("http://www.inkscape.org/namespaces/inkscape", "http://sodipodi.sourceforge.net/",
                     "http://www.w3.org/1999/02/22-rdf-syntax-ns#", "http://purl.org/dc/", "http://creativecommons.org/",
                     "http://ns.adobe.com/", "http://www.bohemiancoding.com/sketch/",
                     "http://www.w3.org/XML/1998/namespace")

PRESENTATION = frozenset({
    "fill", "fill-opacity", "fill-rule", "stroke", "stroke-width", "stroke-opacity", "stroke-dasharray",
    "stroke-dashoffset", "stroke-linecap", "stroke-linejoin", "stroke-miterlimit", "opacity", "stop-color",
    "stop-opacity", "font-family", "font-size", "font-weight", "font-style", "text-anchor", "dominant-baseline",
    "alignment-baseline", "baseline-shift", "letter-spacing", "text-decoration", "visibility", "display",
    "clip-path", "clip-rule", "marker-start", "marker-mid", "marker-end", "vector-effect", "paint-order",
    "shape-rendering", "color"})
ATTRIBUTES = PRESENTATION | frozenset({
    "id", "x", "y", "x1", "y1", "x2", "y2", "cx", "cy", "r", "rx", "ry", "fx", "fy", "fr", "width",
    "height", "d", "points", "dx", "dy", "rotate", "textLength", "lengthAdjust", "pathLength", "viewBox",
    "preserveAspectRatio", "transform", "refX", "refY", "markerWidth", "markerHeight", "markerUnits", "orient",
    "gradientUnits", "gradientTransform", "offset", "spreadMethod", "clipPathUnits", "patternUnits",
    "patternContentUnits", "patternTransform", "version", "aria-label", "style", "href",
    "data-tag", "data-show", "data-kind", "data-on", "data-fixed"})

_FRAGMENT = r"#[A-Za-z_][\w.\-]*"
_HREF = re.compile(rf"\s*({_FRAGMENT})\s*")
_URL = re.compile(r"url\(\s*(['\"]?)(.*?)\1\s*\)", re.IGNORECASE | re.DOTALL)
_URL_START = re.compile(r"url\s*\(", re.IGNORECASE)  # one _URL could not read: unbalanced, nested
_FRAGMENT_ONLY = re.compile(rf"{_FRAGMENT}")
# What a CSS value must not hold: escapes and comments (which can hide the rest), at-rules,
# expressions, and any url() that is not a #fragment (checked apart).
_CSS_UNSAFE = re.compile(r"[\\@<>{}]|/\*|expression|javascript|image-set|-moz-binding|behavior", re.IGNORECASE)


class DiagramError(ValueError):
    """A diagram that cannot be read at all. ``line`` is its line in the SVG, when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


@dataclass(frozen=True, slots=True)
class Binding:
    """An element bound to a tag, at its SVG line."""

    tag: str
    line: int


@dataclass(frozen=True, slots=True)
class Removal:
    """Something of the drawing the sanitiser left out, and why."""

    line: int
    what: str


@dataclass(frozen=True)
class Diagram:
    """A read diagram: ``svg`` is the sanitised text to serve and send."""

    svg: str
    bindings: list[Binding] = field(default_factory=list)
    removed: list[Removal] = field(default_factory=list)
    problems: list[tuple[int, str]] = field(default_factory=list)  # (SVG line, message): misused vocabulary


def sanitize(text: str) -> str:
    """The diagram's safe SVG text; :class:`DiagramError` when it cannot be read."""
    return read_diagram(text).svg


def read_diagram(text: str) -> Diagram:
    """Parse, check and sanitise a diagram's SVG text (see the module's invariants)."""
    if not isinstance(text, str):
        raise DiagramError(f"a diagram is SVG text, not {type(text).__name__}")
    if len(text) > MAX_DIAGRAM_CHARS:
        raise DiagramError(f"the diagram is {len(text):,} characters, over the limit of {MAX_DIAGRAM_CHARS:,}: "
                           "simplify the drawing or remove what an editor left in it (metadata, unused defs)")
    root, lines = _parse(text)
    if _local(root.tag) != "svg" or _namespace(root.tag) not in ("", SVG):
        raise DiagramError(f"the diagram's root element is <{_local(root.tag)}>, not <svg>", lines.get(root))
    if not root.get("viewBox") and not (_number(root.get("width")) and _number(root.get("height"))):
        raise DiagramError("the <svg> needs a viewBox (or a width and a height in numbers) so that it can be "
                           "scaled to the page", lines.get(root))
    writer = _Writer(lines)
    svg = writer.element(root, (), root=True)
    if len(svg) > MAX_DIAGRAM_CHARS:
        raise DiagramError(f"the sanitised diagram is {len(svg):,} characters, over the limit of "
                           f"{MAX_DIAGRAM_CHARS:,}")
    return Diagram(svg, writer.bindings, writer.removed, writer.problems)


class _LineTreeBuilder(ElementTree.TreeBuilder):
    """Builds the tree and notes each element's line; refuses a tree with too many elements or
    nested too deep."""

    def __init__(self) -> None:
        super().__init__()
        self.parser: DefusedXMLParser | None = None
        self.lines: dict[ElementTree.Element, int] = {}
        self.depth = 0

    def start(self, tag: str, attrs: dict[str, str]) -> ElementTree.Element:
        element = super().start(tag, attrs)
        line = self.parser.parser.CurrentLineNumber if self.parser is not None else 0
        if len(self.lines) >= MAX_ELEMENTS:
            raise DiagramError(f"the diagram has more than {MAX_ELEMENTS:,} elements", line)
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise DiagramError(f"the diagram nests elements more than {MAX_DEPTH} deep", line)
        self.lines[element] = line
        return element

    def end(self, tag: str) -> ElementTree.Element:
        self.depth -= 1
        return super().end(tag)


def _parse(text: str) -> tuple[ElementTree.Element, dict[ElementTree.Element, int]]:
    target = _LineTreeBuilder()
    parser = DefusedXMLParser(target=target, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    target.parser = parser
    try:
        parser.feed(text)
        root = parser.close()
    except DTDForbidden:
        line = parser.parser.CurrentLineNumber
        raise DiagramError("the diagram has a DOCTYPE: remove it (a diagram may not declare entities, which can "
                           "expand without bound or read files)", line) from None
    except (EntitiesForbidden, ExternalReferenceForbidden):
        raise DiagramError("the diagram declares entities: remove them", parser.parser.CurrentLineNumber) from None
    except ElementTree.ParseError as error:
        line, _column = error.position
        reason = re.sub(r": line \d+, column \d+$", "", str(error))
        raise DiagramError(f"the diagram is not well-formed XML: {reason}", line) from None
    return root, target.lines


def _local(name: str) -> str:
    return name.rsplit("}", 1)[-1]


def _namespace(name: str) -> str:
    return name[1:].split("}", 1)[0] if name.startswith("{") else ""


def _number(value: str | None) -> bool:
    return value is not None and re.fullmatch(r"\s*[0-9.]+\s*(px)?\s*", value) is not None


def _prefixed(fragment: str) -> str:
    """``#x`` -> ``#pd-x``: a reference to an id of the drawing (whose ids are all prefixed)."""
    name = fragment[1:]
    return "#" + (name if name.startswith(ID_PREFIX) else ID_PREFIX + name)


class _Writer:
    """Writes the allowed part of a parsed tree as SVG text, noting bindings, removals, problems."""

    def __init__(self, lines: dict[ElementTree.Element, int]) -> None:
        self.lines = lines
        self.bindings: list[Binding] = []
        self.removed: list[Removal] = []
        self.problems: list[tuple[int, str]] = []

    def element(self, node: ElementTree.Element, tags: tuple[str, ...], root: bool = False) -> str:
        """``node`` as SVG text ("" when it is not allowed). ``tags``: the data-tag of each
        element around it, innermost last; the ``root`` declares the SVG namespace."""
        line = self.lines.get(node, 0)
        name, namespace = _local(node.tag), _namespace(node.tag)
        if name in EDITOR_DATA or namespace.startswith(EDITOR_NAMESPACES):
            return ""
        if namespace not in ("", SVG):
            self.removed.append(Removal(line, f"<{name}> element of {namespace}: a diagram is SVG only"))
            return ""
        if name not in ELEMENTS:
            self.removed.append(Removal(line, f"<{name}> element: {_why_element(name)}"))
            return ""
        attributes = self.attributes(node, name, line)
        tag = attributes.get("data-tag")
        if tag is not None:
            tags = (*tags, tag)
        self.check_vocabulary(name, attributes, tags, line)
        written = (f' xmlns="{SVG}"' if root else "") + "".join(
            f" {key}={quoteattr(value)}" for key, value in attributes.items())
        children = [escape(node.text or "")]
        for child in node:
            children.append(self.element(child, tags))
            children.append(escape(child.tail or ""))
        body = "".join(children)
        return f"<{name}{written}>{body}</{name}>" if body else f"<{name}{written}/>"

    def attributes(self, node: ElementTree.Element, element: str, line: int) -> dict[str, str]:
        kept: dict[str, str] = {}
        for key, value in node.attrib.items():
            name, namespace = _local(key), _namespace(key)
            if namespace == XLINK and name == "href":
                namespace = ""
            if namespace.startswith(EDITOR_NAMESPACES):
                continue
            if namespace:
                self.removed.append(Removal(line, f"{name} attribute of {namespace} on <{element}>: a diagram is "
                                                  "SVG only"))
                continue
            if name.lower().startswith("on"):
                self.removed.append(Removal(line, f"{name} attribute on <{element}>: a diagram runs no scripts"))
                continue
            if name not in ATTRIBUTES:
                self.removed.append(Removal(line, f"{name} attribute on <{element}>: not a drawing attribute "
                                                  "Pectus allows"))
                continue
            safe = self.value(name, value, element, line)
            if safe is not None:
                kept[name] = safe
        return kept

    def value(self, name: str, value: str, element: str, line: int) -> str | None:
        """The attribute's safe value, or None (noted as removed) when it has none."""
        if name == "id":
            if _FRAGMENT_ONLY.fullmatch("#" + value) is None:
                self.removed.append(Removal(line, f"id {value[:80]!r} on <{element}>: an id is a name of letters, "
                                                  "digits, '_', '.' and '-'"))
                return None
            return value if value.startswith(ID_PREFIX) else ID_PREFIX + value
        if name == "href":
            match = _HREF.fullmatch(value)
            if match is None:
                self.removed.append(Removal(line, f"href on <{element}> to {value[:80]!r}: a diagram refers only "
                                                  "to its own parts (#id), never to another document"))
                return None
            return _prefixed(match[1])
        if name == "style":
            return self.style(value, element, line)
        if name in PRESENTATION:
            safe = _safe_css_value(value)
            if safe is None:
                self.removed.append(Removal(line, f"{name} on <{element}>: {value[:80]!r} refers outside the "
                                                  "drawing or is not a plain value"))
            return safe
        return value

    def style(self, text: str, element: str, line: int) -> str | None:
        kept = []
        for declaration in text.split(";"):
            if not declaration.strip():
                continue
            prop, colon, value = declaration.partition(":")
            prop = prop.strip().lower()
            safe = _safe_css_value(value) if colon else None
            if prop not in PRESENTATION or safe is None:
                self.removed.append(Removal(line, f"style {declaration.strip()[:80]!r} on <{element}>: only "
                                                  "drawing properties with plain values (url(#id) at most) are kept"))
                continue
            kept.append(f"{prop}:{safe.strip()}")
        return ";".join(kept) or None

    def check_vocabulary(self, element: str, attributes: dict[str, str], tags: tuple[str, ...], line: int) -> None:
        tag = attributes.get("data-tag")
        if tag is not None:
            if tag.strip() and tag == tag.strip():
                self.bindings.append(Binding(tag, line))
            else:
                self.problems.append((line, f"data-tag {tag!r} on <{element}>: name a tag, without surrounding "
                                            "spaces"))
        show = attributes.get("data-show")
        if show is not None:
            if show not in SHOWS:
                self.problems.append((line, f"data-show={show!r} on <{element}>: use 'value' or 'state'"))
            elif element not in ("text", "tspan"):
                self.problems.append((line, f"data-show on <{element}>: only a <text> or <tspan> shows a value"))
            elif not tags:
                self.problems.append((line, f"data-show on <{element}> without a data-tag on it or around it: "
                                            "which tag should it show?"))
        kind = attributes.get("data-kind")
        if kind is not None and kind not in KINDS:
            self.problems.append((line, f"data-kind={kind!r} on <{element}>: use "
                                        f"{', '.join(map(repr, KINDS))}"))
        if kind is not None and "data-tag" not in attributes:
            self.problems.append((line, f"data-kind on <{element}> without data-tag: which tag's state?"))
        if "data-on" in attributes and kind is None:
            self.problems.append((line, f"data-on on <{element}> without data-kind: add data-kind='valve' (or "
                                        "'pump', 'switch')"))


def _safe_css_value(value: str) -> str | None:
    """A CSS value with every url() pointing at a #fragment of the drawing (made ``url(#pd-...)``),
    or None when it holds anything else that could load, run or hide something."""
    def fragment(match: re.Match[str]) -> str:
        target = match[2].strip()
        if _FRAGMENT_ONLY.fullmatch(target) is None:
            raise ValueError(target)
        return f"url({_prefixed(target)})"

    try:
        safe = _URL.sub(fragment, value)
    except ValueError:
        return None
    if _URL_START.search(_URL.sub("", safe)) or _CSS_UNSAFE.search(safe):
        return None
    return safe


def _why_element(name: str) -> str:
    if name == "script":
        return "a diagram runs no scripts"
    if name == "foreignObject":
        return "a diagram holds no HTML"
    if name == "style":
        return "a style sheet would style the whole page; use presentation attributes or style attributes"
    if name in ("image", "a", "iframe", "feImage"):
        return "a diagram refers to no other document"
    if name in ("animate", "set", "animateTransform", "animateMotion"):
        return "a diagram is animated by its tags, not by itself"
    return "not a drawing element Pectus allows"
