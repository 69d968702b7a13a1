"""The engine <-> aggregator protocol codec: round trips, clear refusals, and a fuzzed decoder that
never raises anything but ProtocolError."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from pectus.events import protocol as p

EXAMPLES = [
    p.Hello(p.PROTOCOL_VERSION, "host_Demo", "host", "Demo", "0.1.0", "s3cret"),
    p.Records([{"seq": 1, "kind": "state", "time": 1.5, "run": None, "data": {"system_state": "Running"}}]),
    p.Live([{"name": "FT01", "value": 1.25, "unit": "L/h", "time": 2.0, "simulated": False}]),
    p.Reply(7, False, "Start is only possible when the unit is Stopped", False),
    p.Heartbeat(),
    p.Welcome(p.PROTOCOL_VERSION, "host_Demo", 41),
    p.Refused("the secret does not match"),
    p.Ack(42),
    p.Request(3, "control", {"command": "Start"}, {"kind": "user", "id": "u1", "name": "Ann"}),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: m.type)
def test_every_message_round_trips(message):
    assert p.decode(p.encode(message)) == message


@pytest.mark.parametrize("frame, reason", [
    ("not json", "not JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"type": "launch"}', "unknown message type 'launch'"),
    ('{"seq": 1}', "unknown message type None"),
    ('{"type": "ack"}', "'ack' needs the field 'seq'"),
    ('{"type": "ack", "seq": "5"}', "'ack.seq' must be int, not str"),
    ('{"type": "ack", "seq": true}', "'ack.seq' must be int, not bool"),
    ('{"type": "records", "records": [{"seq": 0, "kind": "state", "time": 1, "data": {}}]}', "positive integer"),
    ('{"type": "records", "records": [{"seq": 1, "kind": "vibes", "time": 1, "data": {}}]}', "unknown kind 'vibes'"),
    ('{"type": "records", "records": [{"seq": 1, "kind": "state", "time": "x", "data": {}}]}', "time must be a number"),
    ('{"type": "records", "records": [{"seq": 1, "kind": "state", "time": 1, "data": []}]}', "data must be an object"),
    ('{"type": "records", "records": [5]}', "a record must be an object"),
])
def test_bad_frames_are_refused_with_the_reason(frame, reason):
    with pytest.raises(p.ProtocolError, match=reason.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        p.decode(frame)


def test_oversized_frames_and_messages_from_the_wrong_side_are_refused():
    with pytest.raises(p.ProtocolError, match="over the limit"):
        p.decode("x" * (p.MAX_FRAME + 1))
    with pytest.raises(p.ProtocolError, match="'welcome' is not expected here"):
        p.decode(p.encode(p.Welcome(1, "x", 0)), allowed=p.FROM_ENGINE)


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
                     "computer_name", "uod_name", "engine_version", "secret", "last_seq", "request", "detail",
                     "user", "conflict", "kind", "time", "data"]), json_values, max_size=8))
def test_the_decoder_never_raises_anything_else_on_any_object(kind, fields):
    frame = json.dumps({"type": kind, **fields})
    try:
        message = p.decode(frame)
    except p.ProtocolError:
        return
    assert p.decode(p.encode(message)) == message


def test_the_protocol_document_shows_the_catalogue_of_the_code():
    from conftest import ROOT

    text = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    embedded = text.split("<!-- catalogue -->\n", 1)[1].split("\n<!-- /catalogue -->", 1)[0]
    assert embedded == p.catalogue_markdown()
