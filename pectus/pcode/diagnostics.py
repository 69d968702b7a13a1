"""Diagnostics: what the parser, the analyzer and the interpreter tell a method's author.

A diagnostic always points at a line (1-based, as the editor shows it) and says, in words a
scientist understands, what is wrong and what was expected. The parser and the analyzer never
raise on bad input; they return diagnostics. Only the interpreter turns an error into a run-time
state (the run pauses on error), and it reports it with the same type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One finding about a method.

    ``id`` is a stable machine-readable name (``InvalidIndentation``, ``UndefinedTag``...), the same
    ids the Open Pectus analyzer uses where it has one. ``line``/``end_line`` are 1-based and
    inclusive; ``column`` is 1-based (0 when the whole line is meant). ``fixes`` holds did-you-mean
    replacements, best first, each for the text from ``column`` up to ``end_column`` on ``line``
    (1-based, exclusive; 0: to the end of the line), so an editor can apply one as it is.
    """

    id: str
    severity: Severity
    line: int
    message: str
    column: int = 0
    end_line: int = 0
    fixes: tuple[str, ...] = field(default=())
    end_column: int = 0

    def __post_init__(self) -> None:
        if self.end_line < self.line:
            object.__setattr__(self, "end_line", self.line)

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", column {self.column}" if self.column else "")
        hint = f" Did you mean '{self.fixes[0]}'?" if self.fixes else ""
        return f"{where}: {self.severity}: {self.message}{hint}"


def closest(name: str, candidates: list[str] | tuple[str, ...], cutoff: float = 0.7) -> tuple[str, ...]:
    """Did-you-mean candidates for ``name``, best first (case-insensitive similarity)."""
    import difflib

    lowered = {c.lower(): c for c in candidates}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=cutoff)
    return tuple(lowered[h] for h in hits)
