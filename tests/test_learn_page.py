"""The Learn page in a real browser (Debian's Chromium through Playwright), on real MNIST."""

from __future__ import annotations

import itertools

import pytest
from conftest import serving
from test_page import browser, wait_for  # noqa: F401  (browser: the fixture)

pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn) is not installed")
pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def learn_site(real_cache):
    from mnist_mlp import serve
    from mnist_mlp.learn import Digits, Sessions

    # pages no longer close their sessions when they go (a reload keeps them): room for all
    sessions = Sessions(Digits.load(str(real_cache), progress=False), limit=64)
    with serving(serve.create_app(None, sessions=sessions)) as url:
        yield url + "learn"


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


SHOTS = "/tmp/mnist_mlp-learn"  # screenshots, to look at


def _open(browser, learn_site, query: str = "", **viewport):  # noqa: F811
    page = browser.new_page(viewport=viewport or {"width": 1440, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(learn_site + query)
    wait_for(page, "window.learn.state !== null")
    return page, errors


def _train(page, steps: int) -> None:
    page.evaluate(f"stepOnce({steps})")
    wait_for(page, f"window.learn.state.step >= {steps} && !window.learn.busy")


def _click_node(page, layer: int, index: int) -> None:
    x, y = _centre(page, layer, index)
    page.click("#net", position={"x": x, "y": y})


def test_the_output_layer_in_numbers_and_one_step_checked_by_hand(browser, learn_site):  # noqa: F811
    import os

    os.makedirs(SHOTS, exist_ok=True)
    page, errors = _open(browser, learn_site)
    _train(page, 300)
    label = page.evaluate("window.learn.state.follow.label")
    _click_node(page, 2, label)
    assert page.text_content("#d-title") == f"Output neuron {label}"
    out = page.evaluate("window.learn.state.follow.output")
    assert _number(page, "#d-loss") == pytest.approx(out["loss"], rel=1e-6)
    assert _number(page, "#d-sens") == pytest.approx(out["p"][label] - 1, rel=1e-6)
    assert _number(page, "#d-sumexp") == pytest.approx(sum(out["exp"]), rel=1e-5)
    page.screenshot(path=f"{SHOTS}/output-panel.png")

    # a link into the true output; one step on this digit alone moves it by exactly -lr x a x dz
    page.evaluate(f"setSelected({{kind: 'link', layer: 2, j: 3, k: {label}}})")
    assert page.text_content("#d-title").startswith(f"The link from neuron 3 to output {label}")
    page.click("#one-step")
    wait_for(
        page, "window.learn.state.one_steps === 1 && !document.getElementById('update').hidden"
    )
    assert _number(page, "#u-predicted") == pytest.approx(_number(page, "#u-after"), rel=1e-6)
    assert _number(page, "#u-after") != _number(page, "#u-before")
    assert _number(page, "#u-loss-after") < _number(page, "#u-loss-before")
    assert _number(page, "#u-p-after") > _number(page, "#u-p-before")
    assert "against the gradient" in page.text_content("#details")
    page.screenshot(path=f"{SHOTS}/one-step.png")
    code = page.text_content("#python-code")
    assert "session.advance(300)" in code and "session.step_on_followed()" in code
    assert not errors, errors
    page.close()


def test_the_same_in_python_reproduces_the_pages_numbers(browser, learn_site, real_cache):  # noqa: F811
    page, errors = _open(browser, learn_site)
    _train(page, 120)
    page.evaluate("followIndex(31)")
    wait_for(page, "window.learn.state.follow.index === 31")
    code = page.text_content("#python-code").replace(
        "Digits.load()", f"Digits.load({str(real_cache)!r}, progress=False)"
    )
    shown = page.evaluate("window.learn.state.follow")
    scope: dict = {}
    exec(code.split("\nprint(")[0], scope)  # the panel's lines, up to its prints
    f = scope["f"]
    assert f["loss"] == pytest.approx(shown["loss"], rel=1e-12)
    assert f["output"]["p"].tolist() == pytest.approx(shown["probabilities"], rel=1e-12)
    assert not errors, errors
    page.close()


def test_the_lesson_walks_from_a_sum_to_an_update(browser, learn_site):  # noqa: F811
    from mnist_mlp import model, optim

    page, errors = _open(browser, learn_site, "?lesson=1")
    wait_for(page, "!document.getElementById('lesson').hidden")
    _train(page, 200)
    titles = []
    for screen in range(8):
        titles.append(page.text_content("#lesson-title"))
        module, _, name = page.text_content("#lesson-code").split(" ")[0].partition(".")
        assert hasattr({"model": model, "optim": optim}[module], name), name
        assert page.locator("#lesson-body .hl").count() >= 1  # the numbers it explains, marked
        if screen == 2:
            page.screenshot(path=f"{SHOTS}/lesson-softmax.png")
        if screen < 7:
            page.click("#lesson-next")
    assert titles[0] == "1. One neuron's sum z" and titles[-1] == "8. The update"
    assert page.is_disabled("#lesson-next")
    state = page.evaluate("window.learn.state")
    assert _number(page, "#l-new") == pytest.approx(
        page.evaluate(
            "(() => { const s = window.learn.state, sel = window.learn.selected;"
            " return s.params['W2'][sel.j][sel.k]"
            " - s.config.lr * s.follow.grads['W2'][sel.j][sel.k]; })()"
        ),
        rel=1e-6,
    )
    assert state["config"]["hidden"] == [16]
    page.click("#lesson-back")
    assert page.text_content("#lesson-title") == "7. A link's gradient"
    page.click("#lesson-end")
    assert page.is_hidden("#lesson") and "lesson" not in page.url
    assert not errors, errors
    page.close()


def test_a_blow_up_is_said_in_words_and_pauses(browser, learn_site):  # noqa: F811
    page, errors = _open(browser, learn_site)
    for field, value in {"#hidden": "32,16", "#batch": "1", "#lr": "5"}.items():
        page.fill(field, value)
    page.select_option("#activation", "relu")
    page.press("#lr", "Enter")  # Enter in a setting resets with it
    wait_for(page, "window.learn.state.config.lr === 5")
    page.click("#play")
    wait_for(page, "!document.getElementById('health').hidden", timeout=60)
    wait_for(page, "!window.learn.playing || window.learn.state.step > 3000", timeout=60)
    text = page.text_content("#health")
    assert "dead" in text or "blew up" in text, text
    assert "smaller learning rate" in text
    if "blew up" in text:
        assert not page.evaluate("window.learn.playing")
    else:
        page.click("#play")
    wait_for(page, "!window.learn.busy")
    page.screenshot(path=f"{SHOTS}/health-warning.png")
    assert not errors, errors
    page.close()


def test_the_defects_that_were_reported(browser, learn_site):  # noqa: F811
    page, errors = _open(browser, learn_site)
    first = page.evaluate("window.learn.id")
    # a bad setting refuses to reset, in words, and the old session still trains
    page.fill("#hidden", "sixteen")
    page.click("#reset")
    wait_for(page, "document.getElementById('status').classList.contains('error')")
    assert page.text_content("#status") == "hidden layers: '16' or '32,16' (1 to 64 neurons each)"
    page.fill("#lr", "")
    page.fill("#hidden", "16")
    page.click("#reset")
    wait_for(page, "document.getElementById('status').textContent.startsWith('learning rate')")
    assert page.evaluate("window.learn.id") == first
    page.click("#step")
    wait_for(page, "window.learn.state.step === 1")
    page.fill("#lr", "0.5")
    # Pause says so; Step while playing pauses and takes exactly one step
    page.click("#play")
    wait_for(page, "window.learn.state.step > 50")
    page.click("#step")
    wait_for(
        page,
        "!window.learn.busy && document.getElementById('status').textContent.startsWith('Step ')",
    )
    paused_at = page.evaluate("window.learn.state.step")
    assert not page.evaluate("window.learn.playing")
    page.click("#step")
    wait_for(page, f"window.learn.state.step === {paused_at + 1}")
    page.click("#play")
    wait_for(page, f"window.learn.state.step > {paused_at + 50}")
    page.click("#play")
    wait_for(page, "!window.learn.busy")
    assert page.text_content("#status").startswith("Paused at step ")
    # clicking empty canvas clears the panel
    _click_node(page, 1, 0)
    assert page.text_content("#d-title") == "Hidden neuron 0 of layer 1"
    page.click("#net", position={"x": 3, "y": 3})
    assert page.text_content("#d-title") == "Click a neuron or a link"
    # numbers in one format: no long fixed-point runs of zeros
    _click_node(page, 1, 2)
    import re

    assert not re.search(r"0\.0000", page.text_content("#details"))
    # a dot on the pad is refused with a sentence
    box = page.locator("#pad").bounding_box()
    assert box["y"] + box["height"] <= 900  # beside the network, on the first screen
    page.mouse.click(box["x"] + 70, box["y"] + 70)
    page.click("#follow-own")
    assert page.text_content("#status").startswith("That is a dot, not a digit")
    # a reload keeps the session and the settings
    key, step = page.evaluate("window.learn.id"), page.evaluate("window.learn.state.step")
    page.reload()
    wait_for(page, "window.learn.state !== null")
    assert (
        page.evaluate("window.learn.id") == key and page.evaluate("window.learn.state.step") == step
    )
    assert page.input_value("#lr") == "0.5"
    assert not errors, errors
    page.close()


_PICKS = """((n) => {
    const lay = window.learn.layout, all = lay.links.flat();
    let rng = 12345, ok = 0, tried = 0;
    const rand = () => (rng = (rng * 1103515245 + 12345) % 2147483648) / 2147483648;
    const inNeuron = (x, y) => lay.nodes.slice(1).flat().some((m) => m.tile
        ? x >= m.x - 2 && x <= m.x + m.tile + 2 && y >= m.y - 2 && y <= m.y + m.tile + 2
        : Math.hypot(x - m.x, y - m.y) <= m.r + 2);
    const covers = (l, x, y) => {
        const dx = l.bx - l.ax, dy = l.by - l.ay;
        const u = ((x - l.ax) * dx + (y - l.ay) * dy) / (dx * dx + dy * dy);
        const t = Math.max(0, Math.min(1, u));
        return Math.hypot(x - l.ax - t * dx, y - l.ay - t * dy) <= l.width / 2;
    };
    while (tried < n) {
        const i = Math.floor(rand() * all.length), l = all[i], u = 0.1 + 0.8 * rand();
        const x = l.ax + u * (l.bx - l.ax), y = l.ay + u * (l.by - l.ay);
        if (inNeuron(x, y)) continue;
        tried += 1;
        // what is seen at (x, y): the last line drawn there, this one or one on top of it
        const seen = all.slice(i).filter((m) => covers(m, x, y))
            .map((m) => `${m.layer},${m.j},${m.k}`);
        const hit = pick(x, y);
        if (hit && hit.kind === "link" && seen.includes(`${hit.layer},${hit.j},${hit.k}`)) ok += 1;
    }
    return ok / tried; })"""


@pytest.mark.parametrize(
    "viewport",
    [{"width": 1440, "height": 900}, {"width": 390, "height": 844}],
    ids=["desktop", "phone"],
)
def test_a_click_on_a_drawn_line_selects_it(browser, learn_site, viewport):  # noqa: F811
    page, errors = _open(browser, learn_site, **viewport)
    page.evaluate("document.getElementById('hidden').value = '32,16'")  # (folded on a phone)
    page.evaluate("start()")
    wait_for(page, "window.learn.state.config.hidden.length === 2")
    _train(page, 400)
    for view in ("forward", "backward"):
        page.evaluate(f"setView('{view}')")
        assert page.evaluate(f"{_PICKS}(400)") >= 0.95
    assert not errors, errors
    page.close()


def test_a_64_64_net_trains_and_draws_legibly(browser, learn_site):  # noqa: F811
    page, errors = _open(browser, learn_site)
    page.fill("#hidden", "64,64")
    page.press("#hidden", "Enter")
    wait_for(page, "window.learn.state.config.hidden.length === 2")
    page.click("#play")
    wait_for(page, "window.learn.state.step > 600", timeout=60)
    page.click("#play")
    wait_for(page, "!window.learn.busy")
    layer2 = page.evaluate("window.learn.layout.nodes[2]")
    radius = layer2[0]["r"]
    for a, b in itertools.combinations(layer2, 2):  # no two circles of the second layer overlap
        assert ((a["x"] - b["x"]) ** 2 + (a["y"] - b["y"]) ** 2) ** 0.5 >= 2 * radius
    assert "strongest of" in page.text_content("#legend")  # 4,096 links thinned, and said so
    assert "links between the neuron layers" in page.text_content("#legend")
    page.screenshot(path=f"{SHOTS}/64-64.png")
    assert not errors, errors
    page.close()


def test_the_charts_fit_their_data_and_say_their_scale(browser, learn_site):  # noqa: F811
    page, errors = _open(browser, learn_site)
    _train(page, 1000)
    accuracy = page.get_attribute("#chart-acc", "data-range")
    low, high = map(float, accuracy.split(" to "))
    assert low > 0.5 and high <= 1  # zoomed on the recent values, not 0 to 100%
    assert page.get_attribute("#chart-loss", "data-range").endswith("log scale")
    assert not errors, errors
    page.close()


def test_the_phone_flow_brings_the_numbers_into_sight(browser, learn_site):  # noqa: F811
    page, errors = _open(
        browser,
        learn_site,
        width=390,
        height=844,
    )
    _train(page, 100)
    page.locator("#net").scroll_into_view_if_needed()
    x, y = _centre(page, 2, 3)
    page.click("#net", position={"x": x, "y": y})
    assert page.text_content("#d-title") == "Output neuron 3"
    wait_for(
        page, "document.getElementById('d-title').getBoundingClientRect().bottom < innerHeight"
    )
    # a drawn digit followed: said at once, and the network (its input) brought into sight
    page.locator("#pad").scroll_into_view_if_needed()
    box = page.locator("#pad").bounding_box()
    page.mouse.move(box["x"] + 20, box["y"] + 20)
    page.mouse.down()
    page.mouse.move(box["x"] + 110, box["y"] + 20, steps=8)
    page.mouse.move(box["x"] + 50, box["y"] + 125, steps=8)
    page.mouse.up()
    page.click("#follow-own")
    wait_for(page, "window.learn.state.follow.index === null")
    assert page.text_content("#status").startswith("Following your 7")
    wait_for(page, "Math.abs(document.getElementById('network').getBoundingClientRect().top) < 60")
    page.screenshot(path=f"{SHOTS}/phone-followed.png")
    assert not errors, errors
    page.close()
