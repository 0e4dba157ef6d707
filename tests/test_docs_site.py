"""The documentation site (mkdocs.yml, docs/): built with --strict, as CI builds it, and read
offline in a real browser that may fetch nothing but the site itself."""

from __future__ import annotations

import functools
import http.server
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import only_loopback, require
from test_page import browser, wait_for  # noqa: F401  (browser: the fixture)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    try:
        import material
        import mkdocs  # noqa: F401  (only: is it installed)
        import mkdocs_click  # noqa: F401
        import mkdocstrings  # noqa: F401
    except ImportError:
        material = None
    require(material is not None, "docs: mkdocs, material, mkdocs-click or mkdocstrings missing")
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_every_page_loads_only_the_sites_own_files(site):
    pages = list(site.rglob("*.html"))
    assert len(pages) >= 15
    for page in pages:
        html = page.read_text()
        assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css|woff2?|ttf))"', html)
        assert not [a for a in assets if "//" in a], (page, assets)
        assert "fonts.googleapis" not in html and "fonts.gstatic" not in html


def test_the_references_are_generated_from_the_code(site):
    from mnist_mlp import cli

    commands = (site / "reference" / "cli.html").read_text()
    for name in cli.main.commands:
        assert f"mlp {name}" in commands, name
    python = (site / "reference" / "python.html").read_text()
    for name in (
        "model.forward",
        "model.backward",
        "model.sensitivities",
        "optim.sgd_step",
        "train.fit",
        "estimator.MLPClassifier",
        "learn.Session",
        "learn.follow.output_layer",
    ):
        assert f'id="mnist_mlp.{name}"' in python, name


@pytest.fixture(scope="module")
def served(site):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_the_tutorial_reads_and_search_finds_offline(browser, served):  # noqa: F811
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    elsewhere = only_loopback(page)
    page.goto(served + "/tutorial.html")
    assert "Learn backpropagation" in page.text_content("h1")
    page.screenshot(path="/tmp/mnist_mlp-docs-tutorial.png")
    page.keyboard.press("s")  # Material's shortcut to the search box
    page.keyboard.type("sensitivity")
    wait_for(page, "document.querySelectorAll('.md-search-result__item').length > 0")
    assert not elsewhere, elsewhere
    page.close()
