"""Process diagrams: the builder method, validation with UOD and SVG lines, the sanitiser against
hostile SVGs, the uod record that carries a diagram to the aggregator, and the aggregator's route
(which sanitises again what any engine sends).
"""

from __future__ import annotations

import json
import textwrap
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from xml.sax.saxutils import quoteattr

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import DEMO_UOD
from pectus.actors.uplink import RecordBuilder
from pectus.diagram import (ELEMENTS, MAX_DEPTH, MAX_DIAGRAM_CHARS, MAX_ELEMENTS, PRESENTATION, DiagramError, read_diagram,
                            sanitize)
from pectus.events import protocol as p
from pectus.events.records import RecordError, check_record
from pectus.testing import Simulator
from pectus.uod import UodBuilder, UodError, load_uod, tags
from test_aggregator import record, run_against_aggregator, session

SVG_NS = "http://www.w3.org/2000/svg"
PLANT = """\
<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 200 100">
  <g data-tag="PU01" data-kind="pump">
    <circle cx="50" cy="50" r="20" fill="#fff"/>
    <text x="50" y="90" data-show="value">-</text>
  </g>
  <text x="150" y="50" data-tag="{tag}" data-show="value">-</text>
</svg>
"""


def write_unit(folder: Path, diagram_call: str, svg: str | None = None) -> Path:
    """A UOD file (and its SVG, plant.svg) in ``folder``; the diagram call is on line 11."""
    if svg is not None:
        (folder / "plant.svg").write_text(svg)
    unit = folder / "unit.py"
    unit.write_text(textwrap.dedent(f"""\
        from pectus.uod import UodBuilder, tags


        def create():
            return (UodBuilder()
                    .with_instrument("Unit")
                    .with_author("Ann", "ann@example.com")
                    .with_filename(__file__)
                    .with_hardware_none()
                    .with_tag(tags.Tag("PU01", value=0.0, unit="%"))
                    {diagram_call}
                    .build())
        """))
    return unit


def problems_of(unit: Path) -> list[str]:
    with pytest.raises(UodError) as error:
        load_uod(unit)
    return error.value.problems


def minimal() -> UodBuilder:
    return (UodBuilder().with_instrument("Unit").with_author("Ann", "ann@example.com")
            .with_filename("unit.py").with_hardware_none().with_tag(tags.Tag("PU01", value=0.0, unit="%")))


def assert_safe(svg: str) -> ElementTree.Element:
    """``svg`` is well-formed and holds nothing that runs, loads or links: the sanitiser's promise."""
    root = ElementTree.fromstring(svg)
    assert root.tag == f"{{{SVG_NS}}}svg"
    for element in root.iter():
        assert element.tag.startswith(f"{{{SVG_NS}}}") and element.tag.split("}")[1] in ELEMENTS, element.tag
        for name, value in element.attrib.items():
            assert not name.lower().startswith("on") and "}" not in name, name
            if name == "href":
                assert value.startswith("#pd-"), value
            if name not in PRESENTATION and name not in ("style", "href", "id"):
                continue  # inert text: data-tag, aria-label, geometry
            lowered = value.lower()
            for start in range(len(lowered)):
                if lowered.startswith("url(", start):
                    assert lowered[start:].startswith("url(#pd-"), value
            assert "javascript" not in lowered and "@import" not in lowered and "\\" not in value, value
    return root


# --- the builder ----------------------------------------------------------------------------------


def test_a_diagram_file_is_read_relative_to_the_uod_and_sent_sanitised(tmp_path):
    unit = write_unit(tmp_path, '.with_process_diagram("plant.svg")', PLANT.format(tag="PU01"))
    definition = load_uod(unit)
    diagram = definition.process_diagram
    assert diagram.origin == "plant.svg" and definition.warnings == []
    assert [(b.tag, b.line) for b in diagram.bindings] == [("PU01", 2), ("PU01", 6)]
    assert_safe(diagram.svg)
    assert 'data-tag="PU01"' in diagram.svg and 'data-show="value"' in diagram.svg


def test_the_svg_text_itself_is_accepted():
    definition = minimal().with_process_diagram(PLANT.format(tag="PU01")).build()
    assert definition.process_diagram.origin == "" and "<circle" in definition.process_diagram.svg


def test_the_demo_unit_has_a_diagram_bound_to_its_tags():
    demo = load_uod(DEMO_UOD)
    assert demo.warnings == [] and demo.validate() == []
    bound = {binding.tag for binding in demo.process_diagram.bindings}
    assert bound == {"Inlet", "VA01", "PU01", "FT01", "HE01", "TT01", "UV01", "Column Volume"}
    assert_safe(demo.process_diagram.svg)


def test_a_tag_the_unit_lacks_is_named_with_the_uod_line_the_svg_line_and_a_did_you_mean(tmp_path):
    unit = write_unit(tmp_path, '.with_process_diagram("plant.svg")', PLANT.format(tag="PU02"))
    assert problems_of(unit) == [
        "unit.py:11: with_process_diagram('plant.svg'): plant.svg:6: data-tag 'PU02': no tag named 'PU02'; "
        "did you mean 'PU01'?"]


def test_an_engine_tag_may_be_bound():
    definition = minimal().with_process_diagram(PLANT.format(tag="Block Time")).build()
    assert [b.tag for b in definition.process_diagram.bindings] == ["PU01", "Block Time"]


@pytest.mark.parametrize("svg, problem", [
    ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1 1">\n<g>\n<rect></g>\n</svg>',
     "plant.svg:3: the diagram is not well-formed XML: mismatched tag"),
    ('<?xml version="1.0"?>\n<!DOCTYPE svg [<!ENTITY a "aaaa">]>\n<svg xmlns="http://www.w3.org/2000/svg"/>',
     "plant.svg:2: the diagram has a DOCTYPE: remove it"),
    ('<html xmlns="http://www.w3.org/1999/xhtml"/>', "plant.svg:1: the diagram's root element is <html>, not <svg>"),
    ('<svg xmlns="http://www.w3.org/2000/svg" width="100%"/>', "plant.svg:1: the <svg> needs a viewBox"),
    ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1 1">\n<rect data-tag="PU01" data-show="value"/>\n</svg>',
     "plant.svg:2: data-show on <rect>: only a <text> or <tspan> shows a value"),
    ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1 1">\n<text data-show="value">x</text>\n</svg>',
     "plant.svg:2: data-show on <text> without a data-tag on it or around it"),
    ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1 1">\n<g data-tag="PU01" data-kind="fan"/>\n</svg>',
     "plant.svg:2: data-kind='fan' on <g>: use 'valve', 'pump', 'switch'"),
    ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1 1">\n<g data-tag="PU01" data-on="On"/>\n</svg>',
     "plant.svg:2: data-on on <g> without data-kind"),
    ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1 1">\n\n<text data-tag="PU01" data-show="number">1'
     '</text></svg>', "plant.svg:3: data-show='number' on <text>: use 'value' or 'state'"),
])
def test_a_diagram_that_cannot_be_used_is_an_error_naming_its_uod_and_svg_lines(tmp_path, svg, problem):
    (problem_text,) = problems_of(write_unit(tmp_path, '.with_process_diagram("plant.svg")', svg))
    assert problem_text.startswith(f"unit.py:11: with_process_diagram('plant.svg'): {problem}"), problem_text


def test_an_inline_diagram_names_its_svg_lines_as_such():
    with pytest.raises(UodError) as error:
        minimal().with_process_diagram('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1 1">\n'
                                       '<text data-tag="PU9" data-show="value"/></svg>').build()
    (problem,) = error.value.problems
    assert "with_process_diagram(<SVG text>): SVG line 2: data-tag 'PU9': no tag named 'PU9'" in problem


def test_a_missing_file_a_second_diagram_and_a_too_large_or_deep_one_are_errors(tmp_path):
    assert "cannot read the diagram" in problems_of(write_unit(tmp_path, '.with_process_diagram("none.svg")'))[0]
    twice = write_unit(tmp_path, '.with_process_diagram("plant.svg").with_process_diagram("plant.svg")',
                       PLANT.format(tag="PU01"))
    assert problems_of(twice) == ["unit.py:11: with_process_diagram('plant.svg'): the unit already has a process "
                                  "diagram; a unit has one"]
    big = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1 1"><desc>' + "x" * MAX_DIAGRAM_CHARS + "</desc></svg>"
    (problem,) = problems_of(write_unit(tmp_path, '.with_process_diagram("plant.svg")', big))
    assert f"over the limit of {MAX_DIAGRAM_CHARS:,}" in problem
    many = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1 1">' + "<g/>" * MAX_ELEMENTS + "</svg>")
    (problem,) = problems_of(write_unit(tmp_path, '.with_process_diagram("plant.svg")', many))
    assert f"more than {MAX_ELEMENTS:,} elements" in problem
    deep = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1 1">' + "<g>" * 2000 + "</g>" * 2000 + "</svg>")
    (problem,) = problems_of(write_unit(tmp_path, '.with_process_diagram("plant.svg")', deep))
    assert f"plant.svg:1: the diagram nests elements more than {MAX_DEPTH} deep" in problem


def test_what_the_sanitiser_removes_is_a_warning_with_its_svg_line(tmp_path):
    svg = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1 1">\n'
           '<script>alert(1)</script>\n<rect onclick="alert(2)" width="1" height="1"/>\n</svg>')
    definition = load_uod(write_unit(tmp_path, '.with_process_diagram("plant.svg")', svg))
    assert definition.warnings == [
        "unit.py:11: with_process_diagram('plant.svg'): plant.svg:2: removed the <script> element: a diagram runs "
        "no scripts",
        "unit.py:11: with_process_diagram('plant.svg'): plant.svg:3: removed the onclick attribute on <rect>: a "
        "diagram runs no scripts"]
    assert "script" not in definition.process_diagram.svg and "alert" not in definition.process_diagram.svg


# --- the sanitiser against hostile SVGs -----------------------------------------------------------

HOSTILE = {
    "script": '<script>alert(1)</script><script href="http://evil.example/x.js"/>',
    "onload": '<g onload="alert(1)" ONCLICK="alert(2)" onmouseover="alert(3)"><rect width="1" height="1"/></g>',
    "javascript href": '<a href="javascript:alert(1)"><text>click</text></a>'
                       '<use href="javascript:alert(1)"/><use xlink:href=" javascript:alert(1)"/>',
    "external image": '<image href="http://evil.example/track.png" width="1" height="1"/>'
                      '<image xlink:href="data:image/svg+xml;base64,PHN2Zz4=" width="1" height="1"/>',
    "xlink to http": '<use xlink:href="http://evil.example/sprites.svg#valve"/>'
                     '<pattern id="p" xlink:href="https://evil.example/p.svg#q"/>',
    "style url": '<rect style="fill: url(http://evil.example/a.svg#x); stroke: red; '
                 'background-image: url(https://evil.example/b.png)" width="1" height="1"/>'
                 '<rect fill="url(&quot;http://evil.example/c#d&quot;)" stroke="URL(//evil.example/e)"/>'
                 '<rect style="fill:u\\72l(http://evil.example/f)"/><rect style="stroke: url(#ok)"/>',
    "foreignObject": '<foreignObject width="10" height="10"><div xmlns="http://www.w3.org/1999/xhtml">'
                     '<iframe src="http://evil.example/"/><img src="x" onerror="alert(1)"/></div></foreignObject>',
    "style element": '<style>@import url(http://evil.example/s.css); body { display: none }</style>',
    "animation": '<a><animate attributeName="href" to="javascript:alert(1)"/>'
                 '<set attributeName="href" to="javascript:alert(2)"/><text>x</text></a>',
    "html in svg": '<iframe xmlns="http://www.w3.org/1999/xhtml" src="http://evil.example/"/>'
                   '<h:script xmlns:h="http://www.w3.org/1999/xhtml">alert(1)</h:script>',
    "page takeover": '<rect style="position: fixed; top: 0; left: 0; width: 100vw; z-index: 99" width="1" '
                     'height="1"/><rect class="connection-banner" id="control-stop"/>',
    "filter": '<filter id="f"><feImage href="http://evil.example/i.png"/></filter><rect filter="url(#f)"/>',
}


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_part_is_removed_and_the_rest_is_well_formed(name):
    svg = ('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" viewBox="0 0 9 9">'
           f'{HOSTILE[name]}<circle id="keep" r="1"/></svg>')
    diagram = read_diagram(svg)
    root = assert_safe(diagram.svg)
    assert diagram.removed, "nothing was removed"
    assert root.find(f"{{{SVG_NS}}}circle").get("id") == "pd-keep"  # the drawing itself stays
    assert "evil.example" not in diagram.svg and "alert" not in diagram.svg
    assert sanitize(diagram.svg) == diagram.svg  # sanitising the sanitised changes nothing


def test_a_fragment_reference_is_kept_and_points_at_the_prefixed_id():
    svg = ('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" viewBox="0 0 9 9">'
           '<defs><linearGradient id="g"/><path id="valve" d="M0 0"/></defs>'
           '<rect fill="url(#g)" style="stroke:url( \'#g\' )"/><use xlink:href="#valve"/></svg>')
    out = sanitize(svg)
    assert 'id="pd-g"' in out and 'fill="url(#pd-g)"' in out and 'style="stroke:url(#pd-g)"' in out
    assert '<use href="#pd-valve"/>' in out


@pytest.mark.parametrize("text, reason", [
    ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">'
     '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;">]><svg xmlns="http://www.w3.org/2000/svg">&lol3;</svg>', "DOCTYPE"),
    ('<!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]><svg xmlns="http://www.w3.org/2000/svg">&x;</svg>',
     "DOCTYPE"),
    ('<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">'
     '<svg xmlns="http://www.w3.org/2000/svg"/>', "DOCTYPE"),
    ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1 1">&undefined;</svg>', "undefined entity"),
    ("not svg at all", "not well-formed"),
    ("", "not well-formed"),
])
def test_a_doctype_an_entity_and_what_is_not_xml_are_refused(text, reason):
    with pytest.raises(DiagramError) as error:
        sanitize(text)
    assert reason in str(error.value)


HOSTILE_ELEMENTS = ["script", "foreignObject", "a", "image", "style", "animate", "set", "iframe", "g", "rect",
                    "text", "use", "defs", "linearGradient"]
HOSTILE_ATTRIBUTES = ["onload", "onclick", "href", "xlink:href", "style", "fill", "stroke", "id", "class",
                      "data-tag", "transform"]
HOSTILE_VALUES = ["javascript:alert(1)", "http://evil.example/x", "url(http://evil.example/y)", "#frag",
                  "url(#frag)", "fill:red;position:fixed", "expression(alert(1))", "u\\rl(x)", "red", "@import 'x'",
                  "<>&\"'", "url(#a) url(//evil.example)"]
trees = st.recursive(
    st.builds(lambda name: f"<{name}/>", st.sampled_from(HOSTILE_ELEMENTS)),
    lambda children: st.builds(
        lambda name, attributes, inner: (f"<{name}" + "".join(f" {key}={quoteattr(value)}"
                                                              for key, value in attributes.items())
                                         + f">{''.join(inner)}</{name}>"),
        st.sampled_from(HOSTILE_ELEMENTS),
        st.dictionaries(st.sampled_from(HOSTILE_ATTRIBUTES), st.sampled_from(HOSTILE_VALUES), max_size=4),
        st.lists(children, max_size=4)),
    max_leaves=20)


@given(st.lists(trees, max_size=5))
def test_whatever_mix_of_hostile_parts_the_output_is_safe_well_formed_and_stable(parts):
    svg = ('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" viewBox="0 0 9 9">'
           + "".join(parts) + "</svg>")
    out = sanitize(svg)
    assert_safe(out)
    assert sanitize(out) == out


# --- how a diagram reaches the aggregator ---------------------------------------------------------


def test_the_uod_record_carries_the_sanitised_diagram_and_passes_its_schema():
    record_ = RecordBuilder(Simulator(DEMO_UOD).engine).describe(1.8e9)
    assert record_["data"]["process_diagram"] == load_uod(DEMO_UOD).process_diagram.svg
    checked = check_record(json.dumps({"seq": 1, **record_}))
    assert checked.data.process_diagram.startswith("<svg")


def test_a_unit_without_a_diagram_sends_no_field_so_an_older_aggregator_takes_its_record():
    record_ = RecordBuilder(Simulator(minimal().build()).engine).describe(1.8e9)
    assert "process_diagram" not in record_["data"]
    assert check_record(json.dumps({"seq": 1, **record_})).data.process_diagram is None


def test_a_diagram_over_the_limit_or_empty_is_refused_by_the_record_schema():
    base = RecordBuilder(Simulator(minimal().build()).engine).describe(1.8e9)
    for value in ("x" * (MAX_DIAGRAM_CHARS + 1), ""):
        with pytest.raises(RecordError, match=r"process_diagram"):
            check_record(json.dumps({"seq": 1, **base, "data": {**base["data"], "process_diagram": value}}))


def uod_data(**more) -> dict:
    return {"uod_name": "Unit", "uod_author_name": "A", "uod_author_email": "a@x", "uod_filename": "unit.py",
            "location": "", "hardware": "", "tags": [{"name": "PU01", "unit": "%", "direction": "output"}],
            "readings": [], "commands": [], "plot_configuration": {}, "data_log_interval_seconds": 1.0, **more}


def test_the_aggregator_serves_what_an_engine_sent_sanitised_again_with_a_strict_policy(tmp_path):
    """A hostile engine (a raw client) sends a diagram with a script; an older engine sends none."""
    hostile = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 9 9" onload="alert(1)"><script>alert(2)'
               '</script><text data-tag="PU01" data-show="value">-</text></svg>')

    async def scenario(port, aggregator):
        await session(port, [p.encode(p.Records([record(1, "uod", **uod_data(process_diagram=hostile))]))])
        older = p.Hello(p.PROTOCOL_VERSION, "old_Unit", "old", "Unit", "0.0.9", "old_Unit-key",
                        "fedcba9876543210fedcba9876543210")
        await session(port, [p.encode(p.Records([record(1, "uod", **uod_data())]))], hello=older)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as api:
            return {unit: ((await api.get(f"/api/process_units/{unit}")).json(),
                           await api.get(f"/api/process_units/{unit}/process_diagram"))
                    for unit in ("rogue_Unit", "old_Unit", "nobody_Unit")}

    answers = run_against_aggregator(tmp_path, scenario)
    summary, served = answers["rogue_Unit"]
    assert summary["process_diagram"] is True and served.status_code == 200
    assert served.headers["content-type"] == "image/svg+xml; charset=utf-8"
    assert served.headers["x-content-type-options"] == "nosniff"
    assert served.headers["content-security-policy"] == "default-src 'none'; style-src 'unsafe-inline'; sandbox"
    assert_safe(served.text)
    assert "alert" not in served.text and 'data-tag="PU01"' in served.text
    summary, served = answers["old_Unit"]
    assert summary["process_diagram"] is False and served.status_code == 404
    assert "has no process diagram" in served.json()["error"]["message"]
    assert answers["nobody_Unit"][1].status_code == 404


def test_a_diagram_no_sanitiser_can_read_is_a_502_not_a_page(tmp_path):
    async def scenario(port, aggregator):
        await session(port, [p.encode(p.Records([record(1, "uod", **uod_data(process_diagram="<svg><g></svg>"))]))])
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as api:
            return await api.get("/api/process_units/rogue_Unit/process_diagram")

    served = run_against_aggregator(tmp_path, scenario)
    assert served.status_code == 502 and "not well-formed" in served.json()["error"]["message"]
