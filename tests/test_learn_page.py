"""The Learn page in a real browser (Debian's Chromium through Playwright), on real MNIST."""

from __future__ import annotations

import threading
import time

import pytest
from test_page import browser, wait_for  # noqa: F401  (browser: the fixture)

pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn) is not installed")
pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def learn_site(real_cache):
    import uvicorn

    from mnist_mlp import serve
    from mnist_mlp.learn import Digits, Sessions

    sessions = Sessions(Digits.load(str(real_cache), progress=False))
    sock = serve.listen("127.0.0.1", 0)
    server = uvicorn.Server(
        uvicorn.Config(
            serve.create_app(None, sessions=sessions), log_level="warning", access_log=False
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield serve.url_of(sock) + "learn"
    server.should_exit = True
    thread.join(10)


def _number(page, selector: str) -> float:
    return float(page.text_content(selector).replace("−", "-"))


def _centre(page, layer: int, index: int) -> tuple[float, float]:
    return tuple(
        page.evaluate(
            f"""(() => {{ const n = window.learn.layout.nodes[{layer}][{index}];
            return n.tile ? [n.x + n.tile / 2, n.y + n.tile / 2] : [n.x, n.y]; }})()"""
        )
    )


def test_play_click_a_neuron_and_follow_a_drawn_digit(browser, learn_site):  # noqa: F811
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(learn_site)
    wait_for(page, "window.learn.state !== null")
    assert page.is_hidden("#draw-link")  # mlp learn has no drawing page
    page.click("#play")
    wait_for(
        page,
        "(() => { const a = window.learn.state.history.val_acc.filter(v => v !== null);"
        " return a.length && a[a.length - 1] >= 0.85; })()",
        timeout=90_000,
    )
    page.click("#play")  # pause
    wait_for(page, "!window.learn.busy")
    assert page.text_content("#play") == "Play"
    assert float(page.text_content("#n-acc").rstrip("%")) >= 85

    # a hidden neuron: its terms, summed, times f'(z), are its sensitivity
    x, y = _centre(page, 1, 5)
    page.click("#net", position={"x": x, "y": y})
    assert page.text_content("#d-title") == "Hidden neuron 5 of layer 1"
    total, slope = _number(page, "#d-sum"), _number(page, "#d-fprime")
    product, sensitivity = _number(page, "#d-product"), _number(page, "#d-sens")
    assert product == pytest.approx(total * slope, rel=1e-6)
    assert product == pytest.approx(sensitivity, rel=1e-5, abs=1e-300)
    served = page.evaluate("window.learn.state.follow.dz[0][5]")
    assert sensitivity == pytest.approx(served, rel=1e-6)

    # a link to an output, and its gradient checked by finite differences on the server
    # (a point on the line that no other line passes closer to)
    point = page.evaluate("""(() => {
        const a = window.learn.layout.nodes[1][2], b = window.learn.layout.nodes[2][7];
        const [ax, ay] = outPort(a), [bx, by] = inPort(b);
        for (let t = 0.05; t < 1; t += 0.05) {
            const x = ax + t * (bx - ax), y = ay + t * (by - ay), hit = pick(x, y);
            if (hit && hit.kind === "link" && hit.j === 2 && hit.k === 7) return [x, y];
        }
        return null; })()""")
    assert point is not None
    page.click("#net", position={"x": point[0], "y": point[1]})
    assert page.text_content("#d-title").startswith("The link from neuron 2 to output 7")
    page.click("#check")
    page.wait_for_selector("#d-relerr")
    assert float(page.text_content("#d-relerr")) < 1e-6

    # draw a 7 on the pad and follow it
    page.locator("#pad").scroll_into_view_if_needed()
    box = page.locator("#pad").bounding_box()
    page.mouse.move(box["x"] + 30, box["y"] + 30)
    page.mouse.down()
    for px, py in [(140, 30), (80, 150)]:
        page.mouse.move(box["x"] + px, box["y"] + py, steps=12)
    page.mouse.up()
    page.select_option("#label", "7")
    page.click("#follow-own")
    wait_for(page, "window.learn.state.follow.index === null")
    assert page.evaluate("window.learn.state.follow.label") == 7
    assert page.text_content("#follow-caption").startswith("your digit, a 7")
    page.click("#view-backward")
    assert page.get_attribute("#view-backward", "aria-selected") == "true"
    assert not errors, errors
    page.close()


def test_the_phone_layout(browser, learn_site):  # noqa: F811
    page = browser.new_page(
        viewport={"width": 390, "height": 844},
        is_mobile=True,
        has_touch=True,
        device_scale_factor=2,
    )
    page.goto(learn_site)
    wait_for(page, "window.learn.state !== null")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing runs off the side
    play = page.locator("#play").bounding_box()
    assert play["y"] + play["height"] < 844  # Play is on the first screen
    net = page.locator("#net").bounding_box()
    assert net["width"] <= 390 and net["height"] >= 300
    tile = page.evaluate("window.learn.layout.nodes[1][0].tile")
    assert tile >= 16  # the neurons' pictures stay big enough to tap
    page.tap("#step")
    wait_for(page, "window.learn.state.step === 1")
    page.close()
