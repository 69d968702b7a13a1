"""How the UI plots a unit's process values.

A :class:`PlotConfiguration` is a stack of :class:`SubPlot` panels sharing one x axis. Each panel
has one or more y axes (:class:`PlotAxis`), each plotting some process values. Colour regions
shade the background while a categorical tag has a given value (e.g. one colour per ``Block``),
and annotated tags (typically ``Mark``) are drawn as labelled vertical lines.

Every name mentioned should be a tag of the unit (its own or a system tag). As in Open Pectus, the
plot draws what exists: a name that matches no tag is a *warning* naming the line of the
``with_plot_configuration`` call, and :meth:`PlotConfiguration.restricted_to` leaves it out of
what the UI is sent. Field names are those of Open Pectus, so plot configurations port unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any


class Colors:
    """Colour constants: C0-C9 are matplotlib's "tab10" palette."""

    C0 = "#1F77B4"
    C1 = "#FF7F0E"
    C2 = "#2CA02C"
    C3 = "#D62728"
    C4 = "#9467BD"
    C5 = "#8C564B"
    C6 = "#E377C2"
    C7 = "#7F7F7F"
    C8 = "#BCBD22"
    C9 = "#17BECF"
    Red = "#FF0000"
    Green = "#00FF00"


@dataclass
class PlotAxis:
    """One y axis: its label, the process values drawn against it, its range and colour."""

    label: str
    process_value_names: list[str]
    y_max: float
    y_min: float
    color: str


@dataclass
class SubPlot:
    """One panel; ``ratio`` is its height relative to the other panels."""

    axes: list[PlotAxis]
    ratio: float = 1


@dataclass
class PlotColorRegion:
    """Shade the background by the value of a tag: value -> CSS colour (e.g. ``#66ff6633``)."""

    process_value_name: str
    value_color_map: dict[str | int | float, str]


@dataclass
class PlotConfiguration:
    process_value_names_to_annotate: list[str] = field(default_factory=list)
    color_regions: list[PlotColorRegion] = field(default_factory=list)
    sub_plots: list[SubPlot] = field(default_factory=list)
    x_axis_process_value_names: list[str] = field(default_factory=list)

    @staticmethod
    def empty() -> PlotConfiguration:
        return PlotConfiguration()

    def process_value_names(self) -> list[str]:
        """Every tag name the configuration mentions, in order, without repeats."""
        names = [*self.process_value_names_to_annotate,
                 *(region.process_value_name for region in self.color_regions),
                 *(name for plot in self.sub_plots for axis in plot.axes for name in axis.process_value_names),
                 *self.x_axis_process_value_names]
        return list(dict.fromkeys(names))

    def restricted_to(self, names: Iterable[str]) -> PlotConfiguration:
        """A copy that mentions only ``names``: unknown names are left out, and so are the axes
        left with no process value and the panels left with no axis (the UI draws what exists)."""
        known = set(names)
        sub_plots = []
        for plot in self.sub_plots:
            axes = [replace(axis, process_value_names=[n for n in axis.process_value_names if n in known])
                    for axis in plot.axes]
            axes = [axis for axis in axes if axis.process_value_names]
            if axes:
                sub_plots.append(replace(plot, axes=axes))
        return PlotConfiguration(
            process_value_names_to_annotate=[n for n in self.process_value_names_to_annotate if n in known],
            color_regions=[replace(r, value_color_map=dict(r.value_color_map))
                           for r in self.color_regions if r.process_value_name in known],
            sub_plots=sub_plots,
            x_axis_process_value_names=[n for n in self.x_axis_process_value_names if n in known])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict for the UI (colour-map keys become strings in JSON, as in Open Pectus)."""
        return asdict(self)
