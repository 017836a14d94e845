"""The API documentation pages in a real browser, under the server's Content-Security-Policy."""

from __future__ import annotations

import pytest

from tests.operator.browser import ARTIFACTS, WAIT_MS

pytestmark = pytest.mark.browser


def _console_errors(page) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    return errors


def test_swagger_ui_renders_the_operations(live_server_process, browser):
    base, _ = live_server_process
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(WAIT_MS)
    errors = _console_errors(page)
    loaded_from: set[str] = set()
    page.on("request", lambda request: loaded_from.add(request.url.split("/")[2]))

    # when: a newcomer opens the API documentation
    page.goto(f"{base}/api/docs/")

    # then: Swagger UI draws the operations, every asset from the server itself
    page.wait_for_selector(".swagger-ui .opblock")
    assert page.locator(".opblock-summary-path", has_text="/api/v1/agents").count() >= 1
    assert page.locator(".opblock-summary-path", has_text="/api/v1/auth/token").count() == 1
    assert page.get_by_text("Trading Demo API").first.is_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "api-docs.png"), full_page=False)
    assert loaded_from == {base.split("/")[2]}, loaded_from
    assert errors == [], errors
