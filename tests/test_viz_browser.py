"""The stepping page in a real headless browser (Debian's chromium + chromedriver, via selenium).

Skipped when chromium, chromedriver or selenium is missing. Checks: the page loads from a
file with the network disabled, Next/Previous and the arrow keys move through every step
(each highlighting its node in the SVG), and the browser logs no error."""
import shutil

import numpy as np
import pytest

import viz

from test_viz_models import lecture001, lecture004_scalar

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not CHROMIUM or not DRIVER:
        pytest.skip("chromium and chromedriver not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,900",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    try:
        yield drv
    finally:
        drv.quit()


def _errors(drv):
    return [e for e in drv.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def _state(drv):
    return drv.execute_script("""
        var vis = Array.prototype.filter.call(document.querySelectorAll('section.step'),
                                              function (s) { return !s.hidden; });
        var cur = document.querySelectorAll('g.node.current');
        return {visible: vis.map(function (s) { return s.getAttribute('data-node'); }),
                current: Array.prototype.map.call(cur, function (e) { return e.id; }),
                counter: document.getElementById('counter').textContent,
                prev: document.getElementById('prev').disabled,
                next: document.getElementById('next').disabled,
                math: document.querySelectorAll('math').length};""")


@pytest.mark.parametrize("model", ["lecture001", "lecture004"])
def test_page_steps_through_every_step(browser, tmp_path, model):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    if model == "lecture001":
        g, loss, feeds = lecture001()
    else:
        g, loss, feeds, _ = lecture004_scalar()
    steps = viz.backprop_steps(loss, feeds)
    # lr=None: one section per step (the closing update step is tested in test_teaching_views)
    path = viz.steps_html(steps, tmp_path / "page.html", lr=None)
    browser.get(f"file://{path}")
    n = len(steps)
    ids = [f"n{s.node.index}" for s in steps]
    st = _state(browser)
    assert st["visible"] == [ids[0]] and st["current"] == [ids[0]]
    assert st["counter"] == f"1 / {n}" and st["prev"] and not st["next"] and st["math"] > 0
    nxt = browser.find_element(By.ID, "next")
    for i in range(1, n):
        nxt.click()
        st = _state(browser)
        assert st["visible"] == [ids[i]] and st["current"] == [ids[i]], i
        assert st["counter"] == f"{i + 1} / {n}"
    assert st["next"] and not st["prev"]
    nxt.click()  # disabled at the end: stays
    assert _state(browser)["counter"] == f"{n} / {n}"
    browser.find_element(By.ID, "prev").click()
    assert _state(browser)["visible"] == [ids[n - 2]]
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.ARROW_LEFT)
    assert _state(browser)["visible"] == [ids[n - 3]]
    body.send_keys(Keys.ARROW_RIGHT)
    body.send_keys(Keys.ARROW_RIGHT)
    assert _state(browser)["visible"] == [ids[n - 1]]
    for _ in range(n + 2):
        body.send_keys(Keys.ARROW_LEFT)
    assert _state(browser)["counter"] == f"1 / {n}"
    assert _errors(browser) == []


def test_error_detection_works(browser, tmp_path):
    """The log check above can fail: a page with a script error is caught."""
    p = tmp_path / "bad.html"
    p.write_text("<!DOCTYPE html><html><body><script>undefinedFunction();</script></body></html>")
    browser.get(f"file://{p}")
    assert _errors(browser)


def test_page_scrolls_to_the_node_and_ends_with_the_update(browser, tmp_path):
    """Issue 17 #4: the graph pane follows the highlighted node, labels at a readable size;
    the last step updates every parameter (all highlighted)."""
    from selenium.webdriver.common.by import By
    g, loss, feeds, _ = lecture004_scalar()
    steps = viz.backprop_steps(loss, feeds)
    browser.get(f"file://{viz.steps_html(steps, tmp_path / 'page.html', lr=0.5)}")
    pane = "var p = document.getElementById('graph');"
    nxt = browser.find_element(By.ID, "next")
    seen = []
    for _ in range(len(steps)):
        seen.append(browser.execute_script(pane + "var el = document.querySelector('g.node.current');"
                                           "var r = el.getBoundingClientRect(), q = p.getBoundingClientRect();"
                                           "return [p.scrollTop, r.top >= q.top - 1 && r.bottom <= q.bottom + 1];"))
        nxt.click()
    assert all(visible for _, visible in seen)            # the current node is always in view
    assert len({top for top, _ in seen}) > 1              # ... because the pane scrolled
    size = browser.execute_script("var t = document.querySelector('#graph svg text');"
                                  "return t.getBoundingClientRect().height;")
    assert size >= 9                                      # not ~5 px
    st = _state(browser)
    params = {f"n{n.index}" for n in g.params}
    assert st["counter"] == f"{len(steps) + 1} / {len(steps) + 1}"
    assert set(st["current"]) == params
    assert _errors(browser) == []
