"""Physical units: which units exist, which may be compared, and how to convert between them.

A tag may carry a unit (``TT01`` in ``degC``), and so may a value a method author writes:
``Watch: TT01 > 100 degF``, ``Flow: 2 L/min``, a threshold under ``Base: mL``. Before two such
numbers meet, two questions are asked, in this order:

1. *May they be compared at all?* :func:`check_comparable` answers with a :class:`UnitError` whose
   message says what is wrong in words a scientist understands, or returns quietly.
2. *What is the value in the tag's unit?* :func:`converter` returns a function that answers it.

Every supported unit belongs to exactly one *quantity* (``"flow"``, ``"temperature"``...), listed
in :data:`SUPPORTED_UNITS`. Two units are comparable when both are absent, when they are equal,
or when they are different units of the same quantity - with two exceptions, kept from Open
Pectus because they protect the author from a real mistake:

* a percentage with a stated basis (``vol%``, ``wt%``, ``mol%``) is not comparable with a
  percentage of another basis, and it is only comparable with a plain ``%`` when the *tag* is
  in ``%`` (a tag in ``vol%`` asks for a value by volume, so ``5 %`` is ambiguous there);
* ``CV`` (column volumes) is its own quantity: how many litres one CV is depends on the column,
  so it never converts to a volume.

A unit versus no unit is always an error: ``Watch: Flow > 5`` on a flow tag is a method bug,
not a request to guess.

Invariants:

* The hot path never touches pint. pint takes tens of microseconds per conversion, and a scan
  cycle evaluates many conditions every 0.1 s. So pint only *builds* a conversion - once per
  ``(from_unit, to_unit)`` pair - as an affine map ``x * scale + offset``; :func:`converter`
  caches the resulting closure, and calling it is one float multiply(-add).
* Conversions are built with pint in Decimal mode and then rounded once to float, so the
  constants are the correctly rounded values: ``1 L/min`` is exactly ``60.0 L/h`` and ``0 degC``
  is exactly ``32.0 degF``. (Float-mode pint accumulates rounding on the way through the base
  units and yields ``31.999999999999936``, which breaks ``==`` conditions.)
* ``converter(a, b)`` succeeds exactly when ``check_comparable(b, a)`` does: the direction is
  always *from the value's unit to the tag's unit*, which is what the asymmetric ``%`` rule needs.
* The unit tables only grow, through :func:`add_unit` (a UOD's ``with_measurement_unit``). An
  added unit never changes the meaning of an existing one, so a cached conversion stays right
  forever; adding a unit that already exists with the same meaning is a no-op, and with another
  meaning it is an error.
* Importing this module does not import pint. The tables and the comparability rules are plain
  Python; pint (about a quarter of a second to load) is loaded the first time a conversion is
  built or a unit is added.
"""

from __future__ import annotations

import contextlib
import decimal
import difflib
import functools
import re
from decimal import Decimal
from typing import TYPE_CHECKING, Callable, Iterator

if TYPE_CHECKING:
    import pint

__all__ = [
    "SUPPORTED_UNITS",
    "UnitError",
    "add_unit",
    "check_comparable",
    "compatible_units",
    "convert",
    "converter",
    "is_supported",
    "quantity_of",
]


class UnitError(ValueError):
    """A unit is unknown, or two units cannot be compared or converted.

    ``str(error)`` is meant to be shown to the method's author as it is: it names the units
    involved and, where it helps, the units that would have worked, e.g. ``Cannot compare values
    with incompatible units 'L/h' and 'degC': 'L/h' is a unit of flow, 'degC' is a unit of
    temperature.`` or ``Unknown unit 'Lh'. Did you mean 'L/h'? Flow units: L/h, L/min, L/d.``
    """


SUPPORTED_UNITS: dict[str, list[str]] = {
    "time": ["s", "min", "h", "ms"],
    "length": ["m", "cm"],
    "area": ["m**2", "m2", "dm2", "cm2"],
    "mass": ["kg", "g"],
    "density": ["kg/L", "g/L"],
    "temperature": ["degC", "degF", "K", "°C", "°F"],
    "amount of substance": ["mol"],
    "volume": ["L", "mL"],
    "flow": ["L/h", "L/min", "L/d"],
    "frequency": ["Hz", "kHz"],
    "pressure": ["Pa", "bar", "pascal"],
    "mass flow rate": ["kg/h", "g/s", "g/min", "g/h"],
    "conductivity": ["mS/cm", "µS/cm"],
    "percentage": ["%", "vol%", "wt%", "mol%"],
    "column volume": ["CV"],
    "absorbance": ["AU", "mAU", "milliAU"],
    "permeability": ["LMH/bar", "L/m2/h/bar", "L/h/m2/bar"],
    "flux": ["LMH", "L/m2/h", "L/h/m2"],
}
"""Quantity name -> its units. Read it freely; change it only through :func:`add_unit`, which
keeps the reverse index and the caches in step."""

# The reverse index answers "which quantity?" with one dict lookup; the rules need it per call.
_QUANTITY_OF: dict[str, str] = {unit: q for q, units in SUPPORTED_UNITS.items() for unit in units}

# What the basis of a percentage is called in a message.
_PERCENT_BASIS = {"vol%": "by volume", "wt%": "by weight", "mol%": "by amount of substance"}


# --------------------------------------------------------------------------------------------
# Comparability (no pint unless a message needs it)


def is_supported(unit: str | None) -> bool:
    """True when ``unit`` may be a tag's or a value's unit. ``None`` and ``""`` mean "no unit"."""
    return not unit or unit in _QUANTITY_OF


def quantity_of(unit: str | None) -> str | None:
    """The quantity ``unit`` measures (``"L/h"`` -> ``"flow"``), or ``None`` when it is unknown."""
    return _QUANTITY_OF.get(unit) if unit else None


def compatible_units(unit: str | None) -> list[str]:
    """The units a value may be written in to compare it with a tag in ``unit``.

    These are the supported units of ``unit``'s quantity, ``unit`` itself included, minus the ones
    the percentage rule excludes: ``compatible_units("%")`` lists every percentage, while
    ``compatible_units("vol%")`` is ``["vol%"]``. No unit or an unknown one gives ``[]``.
    A new list each call; changing it changes nothing here.
    """
    quantity = quantity_of(unit)
    if quantity is None:
        return []
    return [u for u in SUPPORTED_UNITS[quantity] if _comparison_problem(unit, u) is None]


def settable_units(unit: str | None) -> list[str]:
    """The units a value may be given in to *set* a tag in ``unit``: its compatible units, except
    that a percentage with a basis sets only a tag of that basis (a pump in ``%`` is set in ``%``,
    never in ``vol%``; comparing it with ``5 vol%`` is another question). ``unit`` comes first."""
    if quantity_of(unit) is None:
        return []
    return list(dict.fromkeys([unit, *(u for u in compatible_units(unit) if u not in _PERCENT_BASIS or u == unit)]))


def check_comparable(tag_unit: str | None, value_unit: str | None) -> None:
    """Raise :class:`UnitError` unless a value in ``value_unit`` may be compared with a tag in
    ``tag_unit`` (see the module docstring for the rules). ``None`` and ``""`` mean "no unit"."""
    problem = _comparison_problem(tag_unit or None, value_unit or None)
    if problem is not None:
        raise UnitError(problem)


# Conditions are checked every tick with the same few unit pairs, and building an unknown-unit
# message may load pint; remembering the answer (a message or None) makes the check a lookup.
# Bounded, because an editor session can feed it any number of typos.
@functools.lru_cache(maxsize=1024)
def _comparison_problem(tag_unit: str | None, value_unit: str | None) -> str | None:
    for unit in (tag_unit, value_unit):
        if unit is not None and unit not in _QUANTITY_OF:
            return _unknown_unit_message(unit)
    if tag_unit is None and value_unit is None:
        return None
    if value_unit is None:
        quantity = _QUANTITY_OF[tag_unit]
        return (
            f"Cannot compare values: the tag has unit '{tag_unit}' but the value has no unit. "
            f"Write the value with a {quantity} unit: {', '.join(compatible_units(tag_unit))}."
        )
    if tag_unit is None:
        return (
            f"Cannot compare values: the value has unit '{value_unit}' but the tag has no unit. "
            "Write the value without a unit."
        )
    if tag_unit == value_unit:
        return None
    incompatible = f"Cannot compare values with incompatible units '{tag_unit}' and '{value_unit}'"
    tag_quantity, value_quantity = _QUANTITY_OF[tag_unit], _QUANTITY_OF[value_unit]
    if tag_quantity != value_quantity:
        return (
            f"{incompatible}: '{tag_unit}' is a unit of {tag_quantity}, "
            f"'{value_unit}' is a unit of {value_quantity}."
        )
    if tag_unit in _PERCENT_BASIS and value_unit in _PERCENT_BASIS:
        return (
            f"{incompatible}: a percentage {_PERCENT_BASIS[tag_unit]} cannot be compared with "
            f"a percentage {_PERCENT_BASIS[value_unit]}."
        )
    if tag_unit in _PERCENT_BASIS:
        return (
            f"{incompatible}: the tag is a percentage {_PERCENT_BASIS[tag_unit]}; "
            f"write the value in '{tag_unit}' too."
        )
    if value_unit in _PERCENT_BASIS and tag_unit != "%":
        return (
            f"{incompatible}: a percentage {_PERCENT_BASIS[value_unit]} can only be compared "
            f"with a tag in '%' or in '{value_unit}'."
        )
    return None


def _unknown_unit_message(unit: str) -> str:
    dimensionality = _dimensionality_or_none(unit)
    if dimensionality is not None:
        # pint knows it, so the author meant a real unit. Either another spelling of a supported
        # one ('ml', 'L/hr', 'uS/cm') or a unit we lack ('mbar'): say which.
        for quantity in _quantities_with(dimensionality):
            spellings = [known for known in SUPPORTED_UNITS[quantity] if _same_size(unit, known)]
            if spellings:
                key = _spelling_key(unit)
                guess = max(
                    spellings,
                    key=lambda k: difflib.SequenceMatcher(None, key, _spelling_key(k)).ratio(),
                )
                return (
                    f"Unknown unit '{unit}'. Did you mean '{guess}'? "
                    f"{quantity.capitalize()} units: {', '.join(SUPPORTED_UNITS[quantity])}."
                )
            return (
                f"Unknown unit '{unit}': it is not one of the supported {quantity} units "
                f"({', '.join(SUPPORTED_UNITS[quantity])}). "
                "A UOD can add it with with_measurement_unit."
            )
    # Compare letters only, ignoring case and punctuation: 'Lh' is a slip for 'L/h', not 'LMH'.
    keyed: dict[str, str] = {}
    for known in _QUANTITY_OF:
        keyed.setdefault(_spelling_key(known), known)
    close = difflib.get_close_matches(_spelling_key(unit), list(keyed), n=1, cutoff=0.6)
    if close:
        guess = keyed[close[0]]
        quantity = _QUANTITY_OF[guess]
        return (
            f"Unknown unit '{unit}'. Did you mean '{guess}'? "
            f"{quantity.capitalize()} units: {', '.join(SUPPORTED_UNITS[quantity])}."
        )
    return f"Unknown unit '{unit}'. Known units: {', '.join(_QUANTITY_OF)}."


def _same_size(unit: str, known: str) -> bool:
    try:
        return _affine_map(unit, known) == (1.0, 0.0)
    except UnitError:
        return False


def _spelling_key(unit: str) -> str:
    return "".join(ch for ch in unit.lower() if ch.isalnum() or ch in "%°")


# --------------------------------------------------------------------------------------------
# Conversion


def _identity(value: float) -> float:
    return value


@functools.cache
def converter(from_unit: str | None, to_unit: str | None) -> Callable[[float], float]:
    """A function converting a value in ``from_unit`` (the value's unit) into ``to_unit`` (the
    tag's unit).

    Raises :class:`UnitError` when ``check_comparable(to_unit, from_unit)`` does. The function is
    built once per pair and then served from a cache; it does no unit work when called.
    """
    check_comparable(to_unit, from_unit)
    if (from_unit or None) == (to_unit or None):
        return _identity
    scale, offset = _affine_map(from_unit, to_unit)
    if offset == 0.0:
        if scale == 1.0:
            return _identity

        def convert_scaled(value: float) -> float:
            return value * scale

        fn = convert_scaled
    else:

        def convert_affine(value: float) -> float:
            return value * scale + offset

        fn = convert_affine
    # A readable name in tracebacks and reprs: "converter('degC', 'degF')".
    fn.__name__ = fn.__qualname__ = f"converter({from_unit!r}, {to_unit!r})"
    return fn


def convert(value: float, from_unit: str | None, to_unit: str | None) -> float:
    """``value`` in ``from_unit`` expressed in ``to_unit``; same rules as :func:`converter`."""
    return converter(from_unit, to_unit)(value)


def _affine_map(from_unit: str, to_unit: str) -> tuple[float, float]:
    """``(scale, offset)`` such that ``x from_unit == x * scale + offset to_unit``."""
    ureg = _registry()
    source, target = _pint_name(from_unit), _pint_name(to_unit)
    # Enough digits that rounding to float afterwards is the only rounding that shows.
    with decimal.localcontext(prec=40):
        try:
            y0, y1, y2 = (
                Decimal(ureg.Quantity(Decimal(x), source).to(target).magnitude) for x in (0, 1, 2)
            )
        except Exception as exc:  # pint raises many types (DimensionalityError, ValueError...)
            raise UnitError(f"Cannot convert from '{from_unit}' to '{to_unit}': {exc}") from exc
        scale = y1 - y0
        # Every unit we accept is linear (plus an offset for temperatures); refuse anything
        # else (a logarithmic unit a UOD might bring) rather than evaluate it wrongly.
        # (The tolerance only absorbs rounding; a non-linear map misses it by far more.)
        if abs((y2 - y1) - scale) > abs(scale) * Decimal("1e-12"):
            raise UnitError(
                f"Cannot convert from '{from_unit}' to '{to_unit}': the conversion is not linear."
            )
    return float(scale), float(y0)


# --------------------------------------------------------------------------------------------
# The pint registry (built lazily, then shared)

# Definitions on top of pint's defaults. Units, not conventions: "m2" is m**2 so that a UOD can
# write areas without "**"; "wt" and "vol" are dimensionless 1 so that "wt%" and "vol%" parse.
# CV and AU get dimensions of their own so that pint itself refuses to turn them into a volume or
# a plain number (pint >= 0.25 ships a dimensionless AU, pint 0.24 none; we want the same
# behaviour with both, hence the redefinition).
_BASE_DEFINITIONS = (
    "m3 = m ** 3",
    "m2 = m ** 2",
    "dm2 = dm ** 2",
    "cm2 = cm ** 2",
    "wt = 1",
    "vol = 1",
    "CV = [pectus_column_volume]",
    "AU = [pectus_absorbance]",
)
# Only where this pint lacks them; newer pint defines them the same way.
_DEFINITIONS_IF_MISSING = {
    "LMH": "LMH = mm / h",
    "°C": "@alias degree_Celsius = °C",
    "°F": "@alias degree_Fahrenheit = °F",
}

# Definitions made by add_unit, replayed when the registry is rebuilt (tests rebuild it to undo
# units they added).
_added_definitions: list[str] = []
_ureg: pint.UnitRegistry | None = None


def _registry() -> pint.UnitRegistry:
    global _ureg
    if _ureg is None:
        import pint

        # Decimal mode costs nothing that matters (pint runs once per unit pair) and gives exact
        # conversion constants. on_redefinition="ignore": we redefine pint's AU on purpose, and
        # add_unit checks for existing names itself before it defines anything.
        ureg = pint.UnitRegistry(non_int_type=Decimal, on_redefinition="ignore")
        for definition in _BASE_DEFINITIONS:
            ureg.define(definition)
        for name, definition in _DEFINITIONS_IF_MISSING.items():
            if name not in ureg:
                ureg.define(definition)
        for definition in _added_definitions:
            ureg.define(definition)
        _ureg = ureg
    return _ureg


def _pint_name(unit: str) -> str:
    # A basis is a label, not a factor: 5 vol% is 5 %. (pint would read "mol%" as mole*percent.)
    return "%" if unit in _PERCENT_BASIS else unit


def _dimensionality_or_none(unit: str):
    """pint's dimensionality of ``unit``, or ``None`` when pint does not understand it."""
    try:
        return _registry().parse_units(_pint_name(unit)).dimensionality
    except Exception:  # pint's parser raises many types for malformed text
        return None


def _dimensionality_of_quantity(quantity: str):
    return _registry().parse_units(_pint_name(SUPPORTED_UNITS[quantity][0])).dimensionality


def _quantities_with(dimensionality) -> list[str]:
    return [q for q in SUPPORTED_UNITS if _dimensionality_of_quantity(q) == dimensionality]


# --------------------------------------------------------------------------------------------
# Adding units (a UOD's with_measurement_unit)

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_RELATION_SIDE = re.compile(rf"^\s*(?P<number>{_NUMBER})?\s*(?P<unit>\S+)\s*$")
# A name pint can define: one word. Expressions such as "DV/h" need no definition of their own.
_DEFINABLE_NAME = re.compile(r"^[^\W\d]\w*$")


def add_unit(
    unit: str,
    unit_relation: str | None = None,
    quantity_relation: str | dict[str, str] | None = None,
    quantity: str | None = None,
) -> None:
    """Make ``unit`` a supported unit, for the whole process (what a UOD's
    ``with_measurement_unit`` does). Three forms:

    * **A unit of an existing quantity.** Give its size with ``unit_relation``, e.g.
      ``add_unit("mm", unit_relation="10 mm = 1 cm")`` or ``add_unit("bottle",
      unit_relation="1 bottle = 2.5 L")``; the quantity is the related unit's (``quantity`` may
      say it too). A unit pint already knows needs no relation: ``add_unit("mbar",
      quantity="pressure")`` (or just ``add_unit("mbar")``, when only one quantity fits).
    * **A new quantity derived from existing ones.** ``quantity`` names it and
      ``quantity_relation`` says what it is made of, in quantity names (or pint dimensions such
      as ``[mass]``): ``add_unit("mg/mL", quantity="concentration", quantity_relation="mass /
      volume")``. The unit must have that dimension.
    * **A free-standing new quantity**, which converts to nothing else:
      ``add_unit("DV", quantity="diafiltration volume")``. Further units of it can then be
      related to it: ``add_unit("mDV", unit_relation="1000 mDV = 1 DV")``.

    Adding a unit that already exists with the same meaning does nothing. Anything else that
    does not add up - a relation that contradicts pint, a unit of the wrong dimension, an
    ambiguous or missing quantity - raises :class:`UnitError` and changes nothing.
    """
    if isinstance(quantity_relation, dict) and len(quantity_relation) == 1 and quantity is None:
        # Open Pectus' form: quantity_relation={"<new quantity>": "<relation>"}
        [(quantity, quantity_relation)] = quantity_relation.items()
    if not isinstance(unit, str) or not unit or any(ch.isspace() for ch in unit):
        raise UnitError(
            f"Invalid unit name {unit!r}: write a unit without spaces, e.g. 'mbar' or 'DV'."
        )
    if quantity is not None:
        quantity = _quantity_name(quantity)
    relation = _parse_unit_relation(unit, unit_relation) if unit_relation is not None else None
    wanted = (
        _dimensionality_of_relation(quantity_relation) if quantity_relation is not None else None
    )

    if unit in _QUANTITY_OF:
        _check_same_meaning(unit, relation, unit_relation, wanted, quantity)
        return

    ureg = _registry()
    definition: str | None = None
    known_dimensionality = _dimensionality_or_none(unit)
    if relation is not None:
        factor, other = relation
        _check_no_offset(other, unit_relation)
        dimensionality = _dimensionality_or_none(other)
        if known_dimensionality is not None:
            _check_relation_holds(unit, relation, unit_relation)
        else:
            _require_definable(unit)
            definition = f"{unit} = {factor:f} * ({_pint_name(other)})"
    else:
        dimensionality = known_dimensionality

    if wanted is not None and quantity is None:
        raise UnitError(
            f"Cannot add unit '{unit}': a quantity_relation defines a quantity, so give it a "
            "name with quantity=..."
        )
    if quantity is None:
        quantity = _infer_quantity(unit, dimensionality, relation)
    elif quantity in SUPPORTED_UNITS:
        if dimensionality is None:
            example = SUPPORTED_UNITS[quantity][0]
            raise UnitError(
                f"Cannot add unit '{unit}' to {quantity}: '{unit}' is not a unit pint knows, so "
                f"say how big it is, e.g. unit_relation='1 {unit} = 5 {example}'."
            )
        expected = _dimensionality_of_quantity(quantity)
        if dimensionality != expected:
            raise UnitError(
                f"Cannot add unit '{unit}' to {quantity}: '{unit}' has dimension "
                f"{_show(dimensionality)}, {quantity} units have {_show(expected)}."
            )
        if wanted is not None and wanted != expected:
            raise UnitError(
                f"Cannot add unit '{unit}': {quantity} already exists with dimension "
                f"{_show(expected)}, not {_show(wanted)} as '{quantity_relation}' says."
            )
    elif dimensionality is None:
        if wanted is not None:
            raise UnitError(
                f"Cannot add unit '{unit}' to {quantity}: '{unit}' is not a unit pint knows, so "
                f"say how big it is with unit_relation='1 {unit} = <number> <unit>'."
            )
        # Free-standing: a dimension of its own, named after the quantity.
        _require_definable(unit)
        definition = f"{unit} = [pectus_{_slug(quantity)}]"
    elif wanted is not None and dimensionality != wanted:
        raise UnitError(
            f"Cannot add unit '{unit}' as a unit of {quantity}: '{unit}' has dimension "
            f"{_show(dimensionality)}, but '{quantity_relation}' is {_show(wanted)}."
        )

    if definition is not None:
        try:
            ureg.define(definition)
        except Exception as exc:
            raise UnitError(f"Cannot add unit '{unit}': {exc}") from exc
        _added_definitions.append(definition)
    SUPPORTED_UNITS.setdefault(quantity, []).append(unit)
    _QUANTITY_OF[unit] = quantity
    # Messages about this unit ("Unknown unit ...") are stale now. Cached conversions are not:
    # no existing unit changed its meaning.
    _comparison_problem.cache_clear()


def _quantity_name(quantity: str) -> str:
    name = " ".join(quantity.split()) if isinstance(quantity, str) else ""
    if not name:
        raise UnitError(f"Invalid quantity name {quantity!r}: name what the unit measures.")
    for existing in SUPPORTED_UNITS:
        # "Length" and "length" are the same quantity; keep the spelling already in the table.
        if existing.lower() == name.lower():
            return existing
    return name


def _parse_unit_relation(unit: str, unit_relation: str) -> tuple[Decimal, str]:
    """``"10 mm = 1 cm"`` for unit ``mm`` -> ``(Decimal("0.1"), "cm")``: 1 unit = factor other."""
    example = f"e.g. '1 {unit} = 2.5 L'"
    sides = unit_relation.split("=") if isinstance(unit_relation, str) else []
    matches = [_RELATION_SIDE.match(side) for side in sides]
    if len(sides) != 2 or not all(matches):
        raise UnitError(
            f"Invalid unit_relation {unit_relation!r} for '{unit}': write '<number> <unit> = "
            f"<number> <unit>', {example}."
        )
    (a, b) = matches
    if (a["unit"] == unit) == (b["unit"] == unit):
        raise UnitError(
            f"Invalid unit_relation {unit_relation!r} for '{unit}': it must relate '{unit}' "
            f"to another unit, {example}."
        )
    this, other = (a, b) if a["unit"] == unit else (b, a)
    this_number, other_number = Decimal(this["number"] or 1), Decimal(other["number"] or 1)
    if this_number <= 0 or other_number <= 0:
        raise UnitError(
            f"Invalid unit_relation {unit_relation!r} for '{unit}': both numbers must be "
            "positive."
        )
    other_unit = other["unit"]
    if _dimensionality_or_none(other_unit) is None:
        raise UnitError(
            f"Invalid unit_relation {unit_relation!r} for '{unit}': unknown unit '{other_unit}'."
        )
    with decimal.localcontext(prec=40):
        return other_number / this_number, other_unit


def _check_no_offset(other: str, unit_relation: str | None) -> None:
    # "1 X = 2 degC" is ambiguous (a temperature or a temperature difference?); pint would read
    # it as a difference and then convert X to degC with the offset - wrong either way.
    try:
        zero = _registry().Quantity(Decimal(0), _pint_name(other)).to_root_units().magnitude
    except Exception:  # pint refuses offset units inside compound units ("degC/min")
        zero = None
    if zero != 0:
        raise UnitError(
            f"Invalid unit_relation {unit_relation!r}: '{other}' has an offset (0 {other} is not "
            "zero), so a unit cannot be defined as a multiple of it; relate it to 'K' instead."
        )


def _check_relation_holds(unit: str, relation: tuple[Decimal, str], unit_relation: str) -> None:
    factor, other = relation
    try:
        scale, _ = _affine_map(unit, other)
    except UnitError:
        scale = None
    if scale is None or abs(scale - float(factor)) > 1e-9 * float(factor):
        actual = "a different quantity" if scale is None else f"1 {unit} = {scale:g} {other}"
        raise UnitError(
            f"Cannot add unit '{unit}' with relation {unit_relation!r}: '{unit}' already exists "
            f"and means something else ({actual})."
        )


def _check_same_meaning(
    unit: str,
    relation: tuple[Decimal, str] | None,
    unit_relation: str | None,
    wanted,
    quantity: str | None,
) -> None:
    current = _QUANTITY_OF[unit]
    if quantity is not None and quantity != current:
        raise UnitError(
            f"Cannot add unit '{unit}' to {quantity}: it is already a unit of {current}."
        )
    if relation is not None:
        _check_no_offset(relation[1], unit_relation)
        _check_relation_holds(unit, relation, unit_relation)
    if wanted is not None:
        actual = _dimensionality_of_quantity(current)
        if actual != wanted:
            raise UnitError(
                f"Cannot add unit '{unit}': it is already a unit of {current}, which has "
                f"dimension {_show(actual)}, not {_show(wanted)}."
            )


def _infer_quantity(unit: str, dimensionality, relation: tuple[Decimal, str] | None) -> str:
    if relation is not None and relation[1] in _QUANTITY_OF:
        return _QUANTITY_OF[relation[1]]
    if dimensionality is None:
        raise UnitError(
            f"Cannot add unit '{unit}': say what it measures, with quantity=... (a new name makes "
            f"a free-standing quantity) or with unit_relation='1 {unit} = <number> <unit>'."
        )
    candidates = _quantities_with(dimensionality)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise UnitError(
            f"Cannot add unit '{unit}': no quantity has its dimension {_show(dimensionality)}; "
            "name a new quantity with quantity=..."
        )
    raise UnitError(
        f"Cannot add unit '{unit}': it could be a unit of {' or '.join(candidates)}; "
        "choose with quantity=..."
    )


def _dimensionality_of_relation(quantity_relation: str):
    """``"mass / volume"`` -> pint's ``[mass] / [length] ** 3``."""
    ureg = _registry()
    names = sorted(SUPPORTED_UNITS, key=len, reverse=True)  # "column volume" before "volume"
    pattern = re.compile(
        r"(?<![\[\w])(" + "|".join(re.escape(n) for n in names) + r")(?![\]\w])", re.IGNORECASE
    )

    def dimension_of(match: re.Match[str]) -> str:
        quantity = _quantity_name(match[1])
        dimensionality = _dimensionality_of_quantity(quantity)
        return f"({dimensionality})" if dimensionality else "(1)"

    expression = pattern.sub(dimension_of, quantity_relation or "")
    leftover = re.findall(r"[^\W\d]\w*", re.sub(r"\[[^\]]*\]", "", expression))
    if not quantity_relation or not quantity_relation.strip() or leftover:
        unknown = f"unknown quantity '{leftover[0]}'; " if leftover else ""
        raise UnitError(
            f"Invalid quantity_relation {quantity_relation!r}: {unknown}write it with the "
            f"quantities {', '.join(SUPPORTED_UNITS)}, e.g. 'mass / volume'."
        )
    try:
        return ureg.get_dimensionality(expression)
    except Exception as exc:
        raise UnitError(f"Invalid quantity_relation {quantity_relation!r}: {exc}") from exc


def _require_definable(unit: str) -> None:
    if not _DEFINABLE_NAME.match(unit):
        raise UnitError(
            f"Cannot add unit '{unit}': a new unit name must be one word (letters, digits, '_'), "
            "e.g. 'DV'. Units made of known ones, like 'DV/h', need no definition of their own."
        )


def _slug(quantity: str) -> str:
    return re.sub(r"\W+", "_", quantity.lower()).strip("_") or "quantity"


def _show(dimensionality) -> str:
    return str(dimensionality) if dimensionality else "dimensionless"


@contextlib.contextmanager
def _scratch_units() -> Iterator[None]:
    """For tests: units added inside the block are forgotten when it ends.

    add_unit changes process-wide tables (a UOD's units are meant for the whole engine), so a
    test that adds units must undo them, or the next test sees them.
    """
    global _ureg
    table = {quantity: list(units) for quantity, units in SUPPORTED_UNITS.items()}
    index = dict(_QUANTITY_OF)
    definitions = list(_added_definitions)
    try:
        yield
    finally:
        SUPPORTED_UNITS.clear()
        SUPPORTED_UNITS.update(table)
        _QUANTITY_OF.clear()
        _QUANTITY_OF.update(index)
        if _added_definitions != definitions:
            # pint cannot forget a definition; rebuild it (with the older additions) on next use.
            _added_definitions[:] = definitions
            _ureg = None
        converter.cache_clear()
        _comparison_problem.cache_clear()


# --------------------------------------------------------------------------------------------
# Open Pectus' names, so that UODs written for it keep working (pectus.uod re-exports them)

#: Open Pectus' name of :data:`SUPPORTED_UNITS`: the same dict, quantity -> its units.
QUANTITY_UNIT_MAP = SUPPORTED_UNITS

#: The units Open Pectus' ``Base:`` instruction may name (which ones count depends on the UOD).
BASE_VALID_UNITS = ["L", "h", "min", "s", "mL", "CV", "DV", "g", "kg"]


def as_decimal(text: str) -> Decimal | None:
    """The number in ``text`` as a Decimal, or None when it is not a (finite) number."""
    try:
        number = Decimal(text.strip())
    except (decimal.InvalidOperation, AttributeError):
        return None
    return number if number.is_finite() else None


def as_int(text: str) -> int | None:
    """The whole number in ``text`` (``"3"`` and ``"3.0"`` give 3), or None when it is not one
    (``as_int("3.2")`` is None), as in Open Pectus."""
    number = as_decimal(text)
    if number is None or number != number.to_integral_value():
        return None
    return int(number)


def get_supported_units() -> list[str | None]:
    """Every supported unit, after ``None`` (no unit)."""
    return [None, *_QUANTITY_OF]


def is_supported_unit(unit: str | None) -> bool:
    return is_supported(unit)


def get_volume_units() -> list[str]:
    return list(SUPPORTED_UNITS["volume"])


def get_unit_quantity_name(unit: str) -> str:
    """The quantity of a supported unit; ValueError for any other."""
    quantity = quantity_of(unit)
    if quantity is None:
        raise ValueError(f"Invalid unit: '{unit}'")
    return quantity


def get_compatible_unit_names(unit: str | None) -> list[str]:
    """:func:`compatible_units`, with Open Pectus' answers for no unit (``[""]``) and for an
    unknown one (ValueError)."""
    if not unit:
        return [""]
    get_unit_quantity_name(unit)
    return compatible_units(unit)


def are_comparable(unit_a: str | None, unit_b: str | None) -> bool:
    """True when a value in ``unit_b`` may be compared with one in ``unit_a``."""
    return _comparison_problem(unit_a or None, unit_b or None) is None


def convert_value_to_unit(value: Decimal | float | int, source_unit: str, target_unit: str) -> float:
    """``value`` in ``source_unit`` expressed in ``target_unit``; ValueError when they do not convert."""
    return convert(float(value), source_unit, target_unit)
