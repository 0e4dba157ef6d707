"""The page of mlp serve in a real browser: Debian's Chromium driven by Playwright.

A network trained on real MNIST (the session's smoke run) serves the page; the tests draw with
mouse strokes and with touch events, upload a photo-like image, and read what the page shows.
"""

from __future__ import annotations

import io
import itertools
import os
import shutil
import time

import imagegen
import numpy as np
import pytest
from conftest import require, serving

pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn) is not installed")

CHROMIUM = (
    os.environ.get("MNIST_MLP_CHROMIUM")
    or shutil.which("chromium")
    or shutil.which("chromium-browser")
)
# As the machine's notes advise: no background connections, which a closed network refuses.
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

pytestmark = pytest.mark.realdata


def wait_for(page, expression: str, timeout: float = 30.0) -> None:
    """Poll ``expression`` in the page until it is true. (Playwright's wait_for_function
    compiles its predicate with eval, which the page's Content-Security-Policy forbids, as it
    should: the tests run under the headers the page is served with.)"""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {expression}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    require(
        sync_playwright is not None, "browser test: playwright (the dev extra) is not installed"
    )
    require(
        CHROMIUM is not None,
        "browser test: no Chromium found (apt-get install chromium, as .ci/run does)",
    )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def site(smoke_checkpoint):
    from mnist_mlp import serve
    from mnist_mlp.predict import Predictor

    with serving(serve.create_app(Predictor(smoke_checkpoint))) as url:
        yield url


@pytest.fixture
def page(browser, site):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.goto(site)
    wait_for(page, "document.getElementById('model').textContent.startsWith('Serving')")
    yield page
    context.close()


# Strokes in units of the canvas side, as a person draws them.
ONE = [[(0.42, 0.28), (0.55, 0.15), (0.55, 0.85)]]
SEVEN = [[(0.25, 0.2), (0.75, 0.2), (0.42, 0.85)]]


def draw_with_mouse(page, strokes):
    # so that answer() waits for the new one
    page.evaluate("document.body.dataset.state = 'pending'")
    box = page.locator("#canvas").bounding_box()
    for stroke in strokes:
        x, y = stroke[0]
        page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"])
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=12)
        page.mouse.up()


def answer(page) -> str:
    wait_for(
        page, "document.body.dataset.state === 'ready' || document.body.dataset.state === 'error'"
    )
    return page.locator("#digit").text_content()


@pytest.mark.parametrize("strokes, digit", [(ONE, "1"), (SEVEN, "7")], ids=["one", "seven"])
def test_drawing_with_the_mouse_shows_the_digit(page, strokes, digit):
    draw_with_mouse(page, strokes)
    assert answer(page) == digit
    assert "sure" in page.locator("#status").text_content()
    widths = page.eval_on_selector_all(
        ".bars .fill", "els => els.map(e => parseFloat(e.style.width))"
    )
    assert (
        len(widths) == 10
        and int(np.argmax(widths)) == int(digit)
        and sum(widths) == pytest.approx(100, abs=1)
    )


def test_undo_and_clear(page):
    draw_with_mouse(page, SEVEN)
    assert answer(page) == "7"
    page.click("#clear")
    assert page.locator("#digit").text_content() == "?"
    assert page.evaluate("document.body.dataset.state") == "empty"
    draw_with_mouse(page, ONE)
    assert answer(page) == "1"
    draw_with_mouse(page, [[(0.25, 0.75), (0.8, 0.75)]])  # a bar under the 1 ...
    first = answer(page)
    page.evaluate("document.body.dataset.state = 'pending'")
    page.click("#undo")  # ... taken back
    assert answer(page) == "1"
    assert page.evaluate("document.body.dataset.state") == "ready" and first in "0123456789"


def test_drawing_with_a_finger_draws_instead_of_scrolling(browser, site):
    context = browser.new_context(
        viewport={"width": 390, "height": 700},
        has_touch=True,
        is_mobile=True,
        device_scale_factor=2,
    )
    page = context.new_page()
    try:
        page.goto(site)
        wait_for(page, "document.getElementById('model').textContent.startsWith('Serving')")
        assert page.evaluate("document.documentElement.scrollHeight") > 700  # the page could scroll
        box = page.locator("#canvas").bounding_box()
        cdp = context.new_cdp_session(page)
        for stroke in SEVEN:
            points = [
                (box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke
            ]
            cdp.send(
                "Input.dispatchTouchEvent",
                {"type": "touchStart", "touchPoints": [{"x": points[0][0], "y": points[0][1]}]},
            )
            for (x0, y0), (x1, y1) in itertools.pairwise(points):
                for t in np.linspace(0, 1, 12)[1:]:
                    cdp.send(
                        "Input.dispatchTouchEvent",
                        {
                            "type": "touchMove",
                            "touchPoints": [{"x": x0 + t * (x1 - x0), "y": y0 + t * (y1 - y0)}],
                        },
                    )
            cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        assert answer(page) == "7"
        assert page.evaluate("window.scrollY") == 0  # the upward stroke did not scroll the page
    finally:
        context.close()


def test_uploading_a_photo(page, mnist_test, tmp_path):
    images, labels = mnist_test
    rng = np.random.default_rng(5)
    right = 0
    for i in range(5):
        photo = imagegen.photo_like(images[i], rng)
        path = tmp_path / f"photo{i}.jpg"
        photo.save(path, quality=85)
        page.evaluate("document.body.dataset.state = 'pending'")
        page.set_input_files("#file", str(path))
        right += answer(page) == str(labels[i])
        assert page.locator("#placeholder").is_hidden()  # the photo is shown where one draws
    assert right >= 4  # the smoke model reads ~96% of MNIST; photos of 5 digits: at most one slip


def test_an_upload_that_is_not_an_image_shows_the_servers_reason(page, tmp_path):
    path = tmp_path / "notes.png"
    path.write_bytes(b"not really a png")
    page.set_input_files("#file", str(path))
    wait_for(page, "document.body.dataset.state === 'error'")
    assert "not an image" in page.locator("#status").text_content()


def test_the_sensitivity_map_is_drawn_in_red_and_blue(page):
    draw_with_mouse(page, SEVEN)
    assert answer(page) == "7"
    counts = page.evaluate("""() => {
        const d = document.getElementById('sensitivity').getContext('2d')
            .getImageData(0, 0, 28, 28).data;
        let red = 0, blue = 0, blank = 0;
        for (let i = 0; i < d.length; i += 4) {
            if (d[i] - d[i + 2] > 60) red++; else if (d[i + 2] - d[i] > 60) blue++;
            if (d[i + 3] === 0) blank++;
        }
        return {red, blue, blank};
    }""")
    assert counts["blank"] == 0 and counts["red"] > 20 and counts["blue"] > 20
    seen = page.evaluate("""() => {
        const d = document.getElementById('seen').getContext('2d').getImageData(0, 0, 28, 28).data;
        let ink = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] < 128) ink++;
        return ink;
    }""")
    assert 40 < seen < 300  # a digit's worth of ink, as MNIST's digits have (about 19% of 784)
    assert '"7"' in page.locator("#sentence").text_content()


def test_screenshot_of_a_drawn_digit(page, tmp_path):
    draw_with_mouse(page, SEVEN)
    assert answer(page) == "7"
    page.wait_for_timeout(400)  # the bars' transition
    shot = page.screenshot(full_page=True)
    from PIL import Image

    image = Image.open(io.BytesIO(shot))
    assert image.width == 1100 and image.height > 900
    out = os.environ.get("MNIST_MLP_SCREENSHOT")
    if out:  # for a person to look at: MNIST_MLP_SCREENSHOT=page.png pytest tests/test_page.py
        image.save(out)
