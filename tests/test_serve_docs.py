"""/docs and /redoc offline: their scripts from this server, rendered in a real browser that
may fetch nothing from anywhere else, under the pages' own policy."""

from __future__ import annotations

import pytest
from conftest import only_loopback, serving
from test_page import browser, wait_for  # noqa: F401  (browser: the fixture)

pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn) is not installed")


@pytest.fixture(scope="module")
def docs_site():
    from mnist_mlp import serve

    with serving(serve.create_app(None)) as url:
        yield url.rstrip("/")


def test_the_docs_pages_name_only_this_servers_files(docs_site):
    import httpx

    for path in ("/docs", "/redoc"):
        r = httpx.get(docs_site + path)
        assert r.status_code == 200
        assert "http" not in r.text and "<script>" not in r.text  # no CDN, no inline script
        policy = r.headers["content-security-policy"]
        assert "script-src 'self';" in policy and "https:" not in policy
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
        r = httpx.get(f"{docs_site}/docs-assets/{name}")
        assert r.status_code == 200 and len(r.content) > 100_000
    assert httpx.get(f"{docs_site}/docs-assets/..%2Fcore.py").status_code == 404


def _offline_page(browser):  # noqa: F811
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    return page, errors, only_loopback(page)


def test_swagger_ui_renders_every_route_offline(browser, docs_site):  # noqa: F811
    page, errors, elsewhere = _offline_page(browser)
    page.goto(docs_site + "/docs")
    wait_for(page, "document.querySelectorAll('.opblock').length >= 8")
    assert "/api/learn/{key}/follow/step" in page.text_content("#swagger-ui")
    page.screenshot(path="/tmp/mnist_mlp-docs.png")
    assert not errors and not elsewhere, (errors, elsewhere)
    page.close()


def test_redoc_renders_offline(browser, docs_site):  # noqa: F811
    page, errors, elsewhere = _offline_page(browser)
    page.goto(docs_site + "/redoc")
    wait_for(page, "document.body.innerText.includes('One SGD step on the followed digit alone')")
    page.screenshot(path="/tmp/mnist_mlp-redoc.png")
    # ReDoc's footer asks for Redocly's logo from their CDN; the policy blocks it (and ReDoc then
    # hides the image): the one refusal expected, and nothing leaves the machine
    blocked = [
        e for e in errors if "cdn.redoc.ly/redoc/logo-mini.svg" in e and "Content Security" in e
    ]
    assert len(blocked) == len(errors) <= 1 and not elsewhere, (errors, elsewhere)
    page.close()
