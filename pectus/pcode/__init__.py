"""The P-code language: parse a method, analyse it against a unit, run it.

The public API:

* :func:`parse` - text (or editor lines with ids) to a :class:`Method`: a tree of :class:`Node`
  with line numbers, and every syntax error as a :class:`Diagnostic`; it never raises.
* :func:`analyze` - the static analysis of a method against a unit's tags, commands and Base
  units: diagnostics with id, severity, line range and did-you-mean fixes; it never raises.
* :class:`Engine` - one unit's tags, run state, method and commands, advanced tick by tick with
  an injected clock (no I/O). :mod:`pectus.testing` wraps it for tests on a virtual clock.

Everything here is plain Python: no Trio, no sockets, no files.
"""

from pectus.pcode.analyzer import analyze
from pectus.pcode.diagnostics import Diagnostic, Severity
from pectus.pcode.engine import Engine, Outcome
from pectus.pcode.syntax import Condition, Kind, Method, Node, parse

__all__ = ["Condition", "Diagnostic", "Engine", "Kind", "Method", "Node", "Outcome", "Severity", "analyze", "parse"]
