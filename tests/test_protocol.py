"""The engine <-> aggregator protocol codec: round trips, clear refusals, and a fuzzed decoder that
never raises anything but ProtocolError."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from pectus.events import protocol as p

OUTBOX = "0123456789abcdef0123456789abcdef"
EXAMPLES = [
    p.Hello(p.PROTOCOL_VERSION, "host_Demo", "host", "Demo", "0.1.0", "key", OUTBOX, 41, "run-1"),
    p.Records([{"seq": 1, "kind": "state", "time": 1.5, "run": None, "data": {"system_state": "Running"}}]),
    p.Live([{"name": "FT01", "value": 1.25, "unit": "L/h", "time": 2.0, "simulated": False}]),
    p.Reply(7, False, "Start is only possible when the unit is Stopped", False),
    p.Heartbeat(),
    p.Welcome(p.PROTOCOL_VERSION, "host_Demo", 41, OUTBOX),
    p.Refused("the key does not match", "credential"),
    p.Ack(42, [p.RefusedRecord(40, "Expected `float` - at `$.time`")]),
    p.Request(3, "control", {"command": "Start"}, {"kind": "user", "id": "u1", "name": "Ann"}),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: m.type)
def test_every_message_round_trips(message):
    # Records stay raw (undecoded) in a message: compare what the frames say.
    assert json.loads(p.encode(p.decode(p.encode(message)))) == json.loads(p.encode(message))


@pytest.mark.parametrize("frame, reason", [
    ("not json", "not valid JSON"),
    ("[1, 2]", "Expected `object`, got `array`"),
    ('{"type": "launch"}', "Invalid value 'launch' - at `$.type`"),
    ('{"seq": 1}', "missing required field `type`"),
    ('{"type": "ack"}', "missing required field `seq`"),
    ('{"type": "ack", "seq": "5"}', "Expected `int`, got `str` - at `$.seq`"),
    ('{"type": "ack", "seq": true}', "Expected `int`, got `bool` - at `$.seq`"),
    ('{"type": "ack", "seq": 5, "extra": 1}', "unknown field `extra`"),
    ('{"type": "live", "values": [{"name": "FT01", "value": [1], "time": 1}]}', "at `$.values[0].value`"),
    ('{"type": "live", "values": [{"name": "FT01", "value": 1, "time": NaN}]}', "not valid JSON"),
    ('{"type": "live", "values": [{"name": "\\ud800", "value": 1, "time": 1}]}', "not valid JSON"),
    ('{"type": "records", "records": 5}', "Expected `array`, got `int` - at `$.records`"),
    ('{"type": "live", "values": ' + "[" * 10_000 + "]" * 10_000 + "}", "Expected `object`, got `array`"),
    ("[" * 100_000 + "]" * 100_000, "nests too deeply|Expected `object`"),
])
def test_bad_frames_are_refused_with_the_reason(frame, reason):
    with pytest.raises(p.ProtocolError, match=reason.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("$", r"\$").replace("`\\$", "`\\$")):
        p.decode(frame)


def test_oversized_frames_and_messages_from_the_wrong_side_are_refused():
    with pytest.raises(p.ProtocolError, match="over the limit"):
        p.decode("x" * (p.MAX_FRAME + 1))
    with pytest.raises(p.ProtocolError, match="'welcome' is not expected here"):
        p.decode(p.encode(p.Welcome(p.PROTOCOL_VERSION, "x", 0)), allowed=p.FROM_ENGINE)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                           lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
                           max_leaves=20)


@settings(max_examples=500)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_the_decoder_never_raises_anything_else_on_any_bytes(frame):
    try:
        p.decode(frame)
    except p.ProtocolError:
        pass


@settings(max_examples=500)
@given(st.sampled_from(sorted(p.MESSAGES)), st.dictionaries(
    st.sampled_from(["seq", "records", "values", "request_id", "accepted", "reason", "protocol", "engine_id",
                     "computer_name", "uod_name", "engine_version", "credential", "outbox", "outbox_seq", "run",
                     "last_seq", "request", "detail", "user", "conflict", "kind", "time", "data", "refused"]),
    json_values, max_size=8))
def test_the_decoder_never_raises_anything_else_on_any_object(kind, fields):
    frame = json.dumps({"type": kind, **fields})
    try:
        message = p.decode(frame)
    except p.ProtocolError:
        return
    assert json.loads(p.encode(p.decode(p.encode(message)))) == json.loads(p.encode(message))


def test_a_hello_of_another_version_is_recognised_before_its_fields_are_checked():
    old = '{"type": "hello", "protocol": 1, "engine_id": "x", "secret": ""}'
    assert p.protocol_of(old) == 1
    assert p.protocol_of("not json") is None


def test_the_protocol_document_shows_the_catalogue_of_the_code():
    from conftest import ROOT

    text = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    embedded = text.split("<!-- catalogue -->\n", 1)[1].split("\n<!-- /catalogue -->", 1)[0]
    assert embedded == p.catalogue_markdown()
