"""The trend: each unit's rolling window of recent values, kept in memory, also between runs.

The window itself (pectus.projections.trend) is sans-I/O: every time is given to it, so the tests
drive it with exact times and no clock; its sampler runs on Trio's MockClock. Then, through a
real aggregator on loopback with a raw engine speaking the protocol: the route, the rows on the
live socket, the command-line option, and what an aggregator restart does (the window is not
stored: it is empty again and refills).
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager

import httpx
import pytest
import trio
import trio.testing
from trio_websocket import open_websocket_url

from pectus.actors.aggregator import AggregatorProcess
from pectus.actors.engine_session import Engines
from pectus.actors.trend_sampler import TrendSampler
from pectus.actors.uplink import RecordBuilder
from pectus.cli.aggregator import _parser
from pectus.events import protocol as p
from pectus.projections.trend import Trend
from pectus.projections.views import Delta
from pectus.testing import Simulator
from pectus.web.app import openapi_document
from conftest import DEMO_UOD
from test_aggregator import engine_hello, serve

T0 = 1_800_000_000.0
UNIT = "lab_Skid"
# A UOD as it describes itself: two plotted tags, a categorical region tag, an annotated one.
DESCRIPTION = {
    "data_log_interval_seconds": 1.0,
    "plot_configuration": {
        "process_value_names_to_annotate": ["Mark"],
        "color_regions": [{"process_value_name": "Block", "value_color_map": {}}],
        "sub_plots": [{"ratio": 1, "axes": [{"label": "Flow", "process_value_names": ["FT01"], "y_min": 0,
                                             "y_max": 10, "color": "#000"}]}],
        "x_axis_process_value_names": ["Process Time"],
    },
    "readings": [{"kind": "reading", "tag_name": "TT01"}],
}
TAGS = ["Mark", "Block", "FT01", "Process Time", "TT01"]


def live(time: float, **values) -> list[dict]:
    return [{"name": name.replace("_", " "), "value": value, "time": time} for name, value in values.items()]


def described(window: float = 60.0) -> Trend:
    trend = Trend(window)
    trend.describe(UNIT, DESCRIPTION)
    return trend


def fed(trend: Trend, time: float, **values) -> dict | None:
    """Values at ``time`` offered as they arrive (the engine's clock and the caller's agree), then
    a sample at that time."""
    trend.offer(UNIT, live(time, **values), time)
    return trend.sample(UNIT, time)


def test_a_row_per_data_log_interval_holds_every_plotted_tag_and_says_what_changed():
    trend = described()
    assert trend.sample(UNIT, T0) is None  # nothing heard yet
    first = fed(trend, T0, FT01=1.0, TT01=20.0, Block="Wash", Clock=T0)
    assert first == {"time": T0, "values": {"Mark": None, "Block": "Wash", "FT01": 1.0, "Process Time": None,
                                            "TT01": 20.0}, "since": T0}
    # Within the interval: held for the next row, no row now.
    assert fed(trend, T0 + 0.25, FT01=2.0) is None
    assert fed(trend, T0 + 0.5, TT01=21.0) is None
    row = trend.sample(UNIT, T0 + 1.0)  # nothing new arrived: time moves on all the same
    assert row == {"time": T0 + 1.0, "values": {"FT01": 2.0, "TT01": 21.0}, "since": T0}
    assert trend.sample(UNIT, T0 + 2.0) == {"time": T0 + 2.0, "values": {}, "since": T0}
    assert trend.rows(UNIT) == 3
    assert trend.series(UNIT) == {
        "Mark": [[T0, None], [T0 + 2, None]], "Block": [[T0, "Wash"], [T0 + 2, "Wash"]],
        "FT01": [[T0, 1.0], [T0 + 1, 2.0], [T0 + 2, 2.0]], "Process Time": [[T0, None], [T0 + 2, None]],
        "TT01": [[T0, 20.0], [T0 + 1, 21.0], [T0 + 2, 21.0]]}
    assert list(trend.series(UNIT)) == TAGS


def test_rows_keep_to_the_engines_clock_when_the_callers_differs():
    trend = described()
    engine_ahead = 90.0  # the engine's clock is a minute and a half ahead of the aggregator's
    trend.offer(UNIT, live(T0 + engine_ahead, FT01=1.0), received=T0)
    assert trend.sample(UNIT, T0)["time"] == T0 + engine_ahead
    assert trend.sample(UNIT, T0 + 1.0)["time"] == T0 + engine_ahead + 1.0


def test_rows_keep_to_the_interval_when_the_samples_come_a_little_late():
    trend = described()
    fed(trend, T0, FT01=1.0)
    # A sampler ticking every 0.25 s, each tick a few milliseconds late: a row every second.
    times = [row["time"] for k in range(1, 41) if (row := trend.sample(UNIT, T0 + k * 0.25 + 0.003))]
    assert [round(time - T0, 3) for time in times] == [1.003 + k for k in range(10)]


def test_the_series_has_a_point_where_a_value_changed_and_at_both_ends():
    trend = described()
    for k in range(10):
        fed(trend, T0 + k, FT01=1.0 if k < 4 else 3.0, Mark="A" if k < 7 else "B")
    series = trend.series(UNIT)
    assert series["FT01"] == [[T0, 1.0], [T0 + 4, 3.0], [T0 + 9, 3.0]]
    assert series["Mark"] == [[T0, "A"], [T0 + 7, "B"], [T0 + 9, "B"]]
    assert series["TT01"] == [[T0, None], [T0 + 9, None]]


def test_rows_older_than_the_window_are_dropped_by_time_and_memory_stays_bounded():
    trend = described(window=60.0)
    sizes: dict[int, list[int]] = {}  # hour -> the window's size after each row of that hour
    for k in range(4 * 3600 * 4):  # four hours of a unit sending four frames a second
        row = fed(trend, T0 + k / 4, FT01=k % 7 + 0.5, Block=f"Block {k // 400}", Mark=None)
        if row is not None:
            assert row["since"] >= row["time"] - 60.0
            sizes.setdefault(k // (3600 * 4), []).append(trend.size(UNIT))
    times = [time for time, _ in trend.series(UNIT)["Process Time"]]
    assert times == [T0 + 4 * 3600 - 61, T0 + 4 * 3600 - 1]  # the rows of the last minute, one a second
    assert trend.rows(UNIT) == 61
    # The same window costs no more memory in the fourth hour than in the first.
    assert max(sizes[3]) <= max(sizes[0]) < 10_000, (max(sizes[0]), max(sizes[3]))


def test_a_gap_longer_than_the_window_leaves_only_the_new_rows():
    trend = described(window=60.0)
    for k in range(30):
        fed(trend, T0 + k, FT01=1.0)
    row = fed(trend, T0 + 3600, FT01=2.0)  # the engine was away for an hour
    assert row["since"] == T0 + 3600
    assert trend.series(UNIT)["FT01"] == [[T0 + 3600, 2.0]]


def test_a_numeric_column_that_gets_text_keeps_its_numbers():
    trend = described()
    fed(trend, T0, FT01=1.5)
    fed(trend, T0 + 1, FT01="overrange")
    fed(trend, T0 + 2, FT01=2)
    assert trend.series(UNIT)["FT01"] == [[T0, 1.5], [T0 + 1, "overrange"], [T0 + 2, 2]]


def test_values_offered_before_the_unit_is_described_make_its_first_row():
    trend = Trend(60.0)
    # An engine's first live values may arrive before its description is stored.
    assert fed(trend, T0, FT01=1.0, Block="Wash") is None
    assert trend.series(UNIT) is None and trend.rows(UNIT) == 0
    trend.describe(UNIT, DESCRIPTION)
    assert trend.sample(UNIT, T0 + 0.5)["values"] == {"Mark": None, "Block": "Wash", "FT01": 1.0,
                                                      "Process Time": None, "TT01": None}


def test_the_same_description_keeps_the_window_and_other_tags_start_it_afresh():
    trend = described()
    fed(trend, T0, FT01=1.0)
    trend.describe(UNIT, DESCRIPTION)  # the engine reconnected with the same UOD
    assert trend.rows(UNIT) == 1
    trend.describe(UNIT, {**DESCRIPTION, "readings": []})
    assert trend.rows(UNIT) == 0 and "TT01" not in trend.series(UNIT)
    assert trend.sample(UNIT, T0 + 1)["values"]["FT01"] == 1.0  # what it had heard still holds


def test_the_sampler_adds_a_row_per_interval_to_each_connected_unit_on_a_virtual_clock():
    """TrendSampler on Trio's MockClock: rows of connected units only, each data-log interval,
    published as trend deltas; an offline unit's window keeps what it had."""
    published: list[Delta] = []

    class Hub:
        def publish(self, deltas: list[Delta]) -> None:
            published.extend(deltas)

    async def main() -> None:
        engines = Engines(writer=None, hub=Hub(), trend=Trend(60.0))  # the sampler uses neither the writer nor the sessions' objects
        for unit, interval in (("lab_A", 1.0), ("lab_B", 2.0), ("lab_Offline", 1.0)):
            engines.trend.describe(unit, {**DESCRIPTION, "data_log_interval_seconds": interval})
            engines.trend.offer(unit, live(T0, FT01=1.0), received=T0)
        engines.sessions.update({"lab_A": object(), "lab_B": object()})
        sampler = TrendSampler(engines, clock=lambda: T0 + trio.current_time())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sampler.run)
            await trio.sleep(10.1)
            nursery.cancel_scope.cancel()
        assert {delta.topic for delta in published} == {"trend"}
        for unit, count in (("lab_A", 10), ("lab_B", 5)):
            times = [delta.data["time"] - T0 for delta in published if delta.unit == unit]
            assert times == pytest.approx([0.25 + k * (10 / count) for k in range(count)]), unit
        assert engines.trend.rows("lab_Offline") == 0

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.mark.parametrize("window", [0.0, -1.0, float("nan"), float("inf")])
def test_a_window_that_is_no_duration_is_refused(window):
    with pytest.raises(ValueError, match="positive number of seconds"):
        Trend(window)


@pytest.mark.parametrize("text, seconds", [("30m", 1800.0), ("1h", 3600.0), ("90s", 90.0), ("600", 600.0),
                                           ("45min", 2700.0)])
def test_the_window_option_takes_a_duration(text, seconds):
    assert _parser().parse_args(["--trend-window", text]).trend_window == seconds
    assert _parser().parse_args([]).trend_window == 1800.0


@pytest.mark.parametrize("text", ["0", "2d", "half an hour", "25h"])
def test_a_window_option_that_is_no_duration_says_what_is_expected(text, capsys):
    with pytest.raises(SystemExit) as exit:
        _parser().parse_args(["--trend-window", text])
    assert exit.value.code == 2
    assert "expected a duration from 1s to 24h" in capsys.readouterr().err


# -- through a real aggregator -------------------------------------------------------------------

def demo_description(time: float) -> dict:
    """The demo engine's UOD record, made as the engine makes it."""
    with Simulator(DEMO_UOD) as sim:
        return {"seq": 1, **RecordBuilder(sim.engine).describe(time)}


@asynccontextmanager
async def engine_sends(port: int, unit: str, frames: list[list[dict]], *, describe: bool = True):
    """A raw engine, connected for the block: hello, its UOD (stored), then ``frames`` of live values."""
    async with open_websocket_url(f"ws://127.0.0.1:{port}/engine", disconnect_timeout=1) as ws:
        await ws.send_message(p.encode(engine_hello(unit)))
        p.decode(await ws.get_message())  # welcome
        if describe:
            await ws.send_message(json.dumps({"type": "records", "records": [demo_description(T0)]}))
            while not isinstance(p.decode(await ws.get_message()), p.Ack):
                pass
        for values in frames:
            await ws.send_message(p.encode(p.Live([p.LiveValue(**value) for value in values])))
        yield


async def get(port: int, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        return await client.get(path)


def test_the_route_serves_the_window_and_the_live_socket_sends_each_new_row(tmp_path):
    unit = "lab_DemoUod"
    frames = [live(T0 + 5, FT01=20.0, TT01=20.0)]  # then nothing: the engine of an idle unit sends no more

    async def scenario(port: int, aggregator: AggregatorProcess):
        rows = []
        async with open_websocket_url(f"ws://127.0.0.1:{port}/api/ws") as browser:
            await browser.send_message(json.dumps({"subscribe": [unit]}))
            assert json.loads(await browser.get_message()) == {"subscribed": [unit]}
            async with engine_sends(port, unit, frames):
                with trio.fail_after(10):
                    while len(rows) < 3:  # the engine sends nothing more: the rows go on all the same
                        message = json.loads(await browser.get_message())
                        if isinstance(message, list):
                            rows += [change["data"] for change in message if change["topic"] == "trend"]
                series = (await get(port, f"/api/process_units/{unit}/trend")).json()
        missing = await get(port, "/api/process_units/nobody_Nothing/trend")
        return rows, series, missing

    rows, series, missing = serve(tmp_path / "data", scenario, accept_new_engines=True)
    # The demo logs data every second; the rows keep to the engine's clock (T0 and on).
    steps = [later["time"] - earlier["time"] for earlier, later in zip(rows, rows[1:])]
    assert all(0.75 <= step <= 1.5 for step in steps), steps
    assert T0 + 5 <= rows[0]["time"] < T0 + 15
    assert rows[0]["values"]["FT01"] == 20.0 and rows[0]["values"]["TT01"] == 20.0
    assert rows[1]["values"] == {} and rows[2]["values"] == {}  # only what changed: nothing
    assert all(row["since"] == rows[0]["time"] for row in rows)
    assert series["FT01"][0] == [rows[0]["time"], 20.0] and series["FT01"][-1][1] == 20.0
    assert set(series) >= {"UV01", "FT01", "Block", "Mark"}  # the demo's plotted tags
    assert missing.status_code == 404


async def rows_of(aggregator: AggregatorProcess, unit: str, count: int) -> None:
    with trio.fail_after(10):
        while aggregator.engines.trend.rows(unit) < count:
            await trio.sleep(0.05)


def test_after_a_restart_the_window_is_empty_and_refills(tmp_path):
    unit = "lab_DemoUod"

    async def first(port: int, aggregator: AggregatorProcess):
        async with engine_sends(port, unit, [live(T0, FT01=1.0)]):
            await rows_of(aggregator, unit, 2)
            return (await get(port, f"/api/process_units/{unit}/trend")).json()

    async def second(port: int, aggregator: AggregatorProcess):
        empty = (await get(port, f"/api/process_units/{unit}/trend")).json()
        # The engine reconnects without describing itself again: the stored UOD is the window's.
        async with engine_sends(port, unit, [live(T0 + 100, FT01=2.0)], describe=False):
            await rows_of(aggregator, unit, 2)
            return empty, (await get(port, f"/api/process_units/{unit}/trend")).json()

    before = serve(tmp_path / "data", first, accept_new_engines=True)
    empty, refilled = serve(tmp_path / "data", second, accept_new_engines=True)
    assert [value for _, value in before["FT01"]] == [1.0, 1.0]
    assert all(points == [] for points in empty.values()) and "FT01" in empty
    assert [value for _, value in refilled["FT01"]] == [2.0, 2.0]
    assert refilled["FT01"][0][0] >= T0 + 100


def test_the_route_is_in_the_api_document():
    document = openapi_document("test")
    route = document["paths"]["/api/process_units/{unit}/trend"]["get"]
    assert "rolling window" in route["summary"]
    assert set(route["responses"]) >= {"200", "404"}
