"""Regular-expression helpers for UOD command arguments.

A UOD command whose arguments follow a pattern declares it with
``with_command_regex_arguments(name, pattern, exec_fn)``: the pattern's *named groups* become the
keyword arguments of ``exec_fn``. These helpers build the common patterns::

    RegexNumber(units=["L/h", "L/min"])    # "12 L/h"  -> {"number": "12", "number_unit": "L/h"}
    RegexCategorical(["Open", "Closed"])    # "Open"    -> {"option": "Open"}
    RegexText()                             # "any text" -> {"text": "any text"}

Invariants:

* every helper returns a plain ``str`` (so a UOD may also write its own pattern, or combine
  them), anchored at both ends and tolerant of whitespace around the value;
* the group names are fixed: ``number`` and ``number_unit``, ``option``, ``text``. The UI, the
  analyzer and the example generator recognise a command's argument kind by them
  (:func:`describe_pattern`);
* units and options are matched literally (regex-escaped, with ``/`` escaped too so that the
  pattern is also a valid JavaScript regex for the editor).

The names and shapes are those of Open Pectus, so UOD files port unchanged.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

# Digits only, never \d: a Unicode digit would match but then fail float().
_NUMBER = r"[0-9]+(?:[.][0-9]*)?|[.][0-9]+"
_INTEGER = r"[0-9]+"


def _literal(text: str) -> str:
    return re.escape(text).replace("/", r"\/")


def _alternatives(options: list[str]) -> str:
    return "|".join(_literal(o) for o in options)


def _number_body(units: list[str] | None, non_negative: bool, int_only: bool) -> str:
    sign = "" if non_negative else "-?"
    digits = _INTEGER if int_only else _NUMBER
    body = rf"(?P<number>{sign}(?:{digits}))"
    if units:
        body += rf"\s*(?P<number_unit>{_alternatives(units)})"
    return body


def RegexNumber(units: list[str] | None = None, non_negative: bool = False, int_only: bool = False) -> str:
    """A number, with one of ``units`` when given: groups ``number`` (and ``number_unit``).

    Accepts ``12``, ``12.``, ``12.5``, ``.5`` and, unless ``non_negative``, a leading ``-``;
    with ``int_only`` digits only. A unit, when ``units`` are given, is mandatory.
    """
    return rf"^\s*{_number_body(units, non_negative, int_only)}\s*$"


def RegexNumberOptional(units: list[str] | None = None, non_negative: bool = False,
                        int_only: bool = False) -> str:
    """Like :func:`RegexNumber`, or nothing at all (then both groups are None)."""
    return rf"^\s*(?:{_number_body(units, non_negative, int_only)})?\s*$"


def RegexCategorical(exclusive_options: list[str] | None = None,
                     additive_options: list[str] | None = None) -> str:
    """Group ``option``: one exclusive option, or a ``+``-joined combination of additive ones.

    ``RegexCategorical(["Closed"], ["VA01", "VA02"])`` matches ``Closed``, ``VA01`` and
    ``VA01+VA02`` but not ``Closed+VA01`` nor ``VA01+``.
    """
    if not exclusive_options and not additive_options:
        raise TypeError("RegexCategorical needs exclusive_options, additive_options or both")
    choices = []
    if exclusive_options:
        choices.append(_alternatives(exclusive_options))
    if additive_options:
        one = f"(?:{_alternatives(additive_options)})"
        choices.append(rf"{one}(?:\+{one})*")
    return rf"^\s*(?P<option>{'|'.join(choices)})\s*$"


def RegexText(allow_empty: bool = False) -> str:
    """Group ``text``: the whole argument (at least one character unless ``allow_empty``)."""
    return r"^(?P<text>.*)$" if allow_empty else r"^(?P<text>.+)$"


DURATION_UNITS = ["s", "min", "h"]
REGEX_DURATION = RegexNumber(units=DURATION_UNITS, non_negative=True)
REGEX_DURATION_OPTIONAL = RegexNumberOptional(units=DURATION_UNITS, non_negative=True)
REGEX_INT = RegexNumber(non_negative=True, int_only=True)
REGEX_TEXT = RegexText(allow_empty=True)
REGEX_BASE_ARG = RegexCategorical(exclusive_options=["L", "h", "min", "s", "mL", "CV", "DV", "g", "kg"])


@dataclass(frozen=True, slots=True)
class PatternInfo:
    """What a pattern tells about its argument, for the UI, the analyzer and examples."""

    groups: tuple[str, ...]
    units: tuple[str, ...]
    exclusive_options: tuple[str, ...]
    additive_options: tuple[str, ...]


def describe_pattern(pattern: str) -> PatternInfo:
    """Read named groups, units and options out of ``pattern``.

    Units and options are read from the helpers' shapes; alternatives that are not literal text
    (a hand-written ``[a-z]+``, say) are left out, so the lists only ever name real values.
    """
    groups = tuple(re.compile(pattern).groupindex)
    units = tuple(_literals(_split_top(_group_body(pattern, "number_unit") or "")))
    exclusive: list[str] = []
    additive: list[str] = []
    for alternative in _split_top(_group_body(pattern, "option") or ""):
        combination = re.fullmatch(r"\(\?:(.*)\)\(\?:\\\+\(\?:\1\)\)\*", alternative)
        if combination:
            additive.extend(_literals(_split_top(combination.group(1))))
        else:
            exclusive.extend(_literals([alternative]))
    return PatternInfo(groups, units, tuple(exclusive), tuple(additive))


def _group_body(pattern: str, name: str) -> str | None:
    """The text between ``(?P<name>`` and its closing parenthesis."""
    opening = f"(?P<{name}>"
    start = pattern.find(opening)
    if start < 0:
        return None
    depth, i = 1, start + len(opening)
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 1
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return pattern[start + len(opening):i]
        i += 1
    return None


def _split_top(body: str) -> list[str]:
    """Split on the ``|`` that are not escaped, bracketed or inside a group."""
    parts, depth, current, i = [], 0, "", 0
    while i < len(body):
        char = body[i]
        if char == "\\":
            current += body[i:i + 2]
            i += 2
            continue
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == "|" and depth == 0:
            parts.append(current)
            current = ""
            i += 1
            continue
        current += char
        i += 1
    return [*parts, current] if body else parts


def _literals(alternatives: list[str]) -> list[str]:
    """The alternatives that are literal text (no metacharacter, no ``\\d``-like class), unescaped."""
    return [re.sub(r"\\(.)", r"\1", a) for a in alternatives
            if a and not re.search(r"\\[A-Za-z0-9]", a)
            and not re.search(r"[.^$*+?{}\[\]()|]", re.sub(r"\\.", "", a))]


@dataclass(frozen=True, slots=True)
class NumberShape:
    """The arguments :func:`RegexNumber` or :func:`RegexNumberOptional` (``optional``) were given."""

    units: tuple[str, ...]
    non_negative: bool
    int_only: bool
    optional: bool


def number_shape(pattern: str) -> NumberShape | None:
    """How the number helpers built ``pattern`` (recognised by building it again); None for any
    other pattern, a hand-written one included: its rules are not guessed."""
    units = describe_pattern(pattern).units
    for non_negative, int_only, optional in itertools.product((False, True), repeat=3):
        helper = RegexNumberOptional if optional else RegexNumber
        if helper(list(units) or None, non_negative, int_only) == pattern:
            return NumberShape(units, non_negative, int_only, optional)
    return None


def describe_accepted(pattern: str) -> str | None:
    """What an argument must be to match ``pattern``, in words, for a message that refuses one.

    ``RegexNumber(units=["%"], non_negative=True)`` gives "a number, 0 or more, in % (percentage)";
    ``RegexCategorical(["Open", "Closed"])`` gives "one of Open or Closed". Only the helpers'
    shapes are described (recognised by building them again from what :func:`describe_pattern`
    reads); for a hand-written pattern the answer is None, never a guess.
    """
    info = describe_pattern(pattern)
    if "number" in info.groups:
        shape = number_shape(pattern)
        if shape is None:
            return None
        text = "a whole number" if shape.int_only else "a number"
        if shape.non_negative:
            text += ", 0 or more" + ("," if shape.units else "")
        if shape.units:
            text += f" in {units_in_words(list(shape.units))}"
        return text + (", or nothing" if shape.optional else "")
    if "option" in info.groups:
        exclusive, additive = list(info.exclusive_options), list(info.additive_options)
        if RegexCategorical(exclusive or None, additive or None) != pattern:
            return None
        choices = []
        if exclusive:
            choices.append(f"one of {either(exclusive)}")
        if additive:
            several = f", or several of them joined by '+' (e.g. {'+'.join(additive[:2])})" if len(additive) > 1 else ""
            choices.append(either(additive) + several)
        return "; or ".join(choices)
    return None


def units_in_words(units: list[str]) -> str:
    """``["L", "mL", "L/h"]`` -> "L or mL (volume) or L/h (flow)": units grouped by their quantity."""
    from pectus.pcode.units import quantity_of

    by_quantity: dict[str | None, list[str]] = {}
    for unit in units:
        by_quantity.setdefault(quantity_of(unit), []).append(unit)
    return either([either(same) + (f" ({quantity})" if quantity else "") for quantity, same in by_quantity.items()])


def either(words: list[str]) -> str:
    """``["a", "b", "c"]`` -> "a, b or c"."""
    return " or ".join([", ".join(words[:-1]), words[-1]] if len(words) > 1 else words)
