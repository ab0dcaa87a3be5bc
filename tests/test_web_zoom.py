"""A zoomed chart, in Debian's Chromium against a real daemon (#30): a job page's chart of a long
series (reduced on the server from its chunks) shows every point of a dragged range, read from
the server, and the whole series again on a double click."""

from __future__ import annotations

import json
import math

import pytest

from conftest import wait_for
from test_web import CHROMIUM, JOB, browser, page_as, web  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium; .ci/run does)"),
              pytest.mark.shared_envs]


def test_a_dragged_range_of_a_long_series_shows_its_every_point_and_a_double_click_the_whole(web, browser):  # noqa: F811
    d, runner = web
    jid = runner.submit("--name", "zoom", "--parser", "generic", "--", *JOB, "burst", "20000")
    runner.wait_state(jid)
    wait_for(lambda: json.loads(runner.run("show", jid, "--json").stdout)["metrics"].get("loss") is not None, 10, what="metrics stored")
    page = page_as(browser, d)
    page.goto(d.url + f"/ui/jobs/{jid}")
    chart = ".chart.small[data-names='loss']"
    page.wait_for_selector(chart + "[data-points]")
    wait_for(lambda: page.get_attribute(chart, "data-total") == "20000", 10, what="the whole series stored")
    whole = int(page.get_attribute(chart, "data-points"))
    assert whole <= 1000
    box = page.locator(chart + " .u-over").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.40, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.43, y, steps=5)
    page.mouse.up()
    page.wait_for_selector(chart + "[data-zoom]")
    lo, hi = (float(v) for v in page.get_attribute(chart, "data-zoom").split(","))
    steps = len(range(max(0, math.ceil(lo)), min(19_999, math.floor(hi)) + 1))  # the job printed steps 0..19,999
    assert 100 < steps <= 1000 and int(page.get_attribute(chart, "data-zoom-points")) == steps  # every point of the range
    page.locator(chart + " .u-over").dblclick()
    wait_for(lambda: page.get_attribute(chart, "data-zoom") is None, 5, what="the whole series again")
    assert int(page.get_attribute(chart, "data-points")) == whole
    assert not page.errors
