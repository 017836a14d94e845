"""The admin's approval request page in a real browser: read it, approve from it."""

from __future__ import annotations

import re

import pytest

from tests.operator.browser import ARTIFACTS, WAIT_MS

pytestmark = pytest.mark.browser


def test_operator_approves_on_the_request_page(live_server_process, browser):
    base, _ = live_server_process
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)

    # given: the demo operator signed in to the admin
    page.goto(f"{base}/admin/login/?next=/admin/oversight/approvalrequest/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "operator-demo-pass")
    page.click("input[type=submit]")
    page.wait_for_selector("#result_list")

    # the queue fits the screen: agent names, no horizontal scroll
    row = page.locator("#result_list tbody tr").first
    assert "Alice Momentum" in row.inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= 1400

    # when: the operator opens the pending request
    row.locator("th a").click()
    page.wait_for_selector(".decide")
    assert page.locator("table.risk-factors tbody tr").count() == 4
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "admin-approval.png"), full_page=True)

    # and approves it there
    page.get_by_role("button", name="Approve").click()

    # then: the page says what was decided, and offers no second decision
    message = page.locator("ul.messagelist li.success").inner_text()
    assert re.match(r"Approved: buy [\d.]+ \w+ for Alice Momentum \(order filled\)\.", message)
    assert page.locator(".decide").count() == 0
    assert "approved by operator" in page.locator(".inline-group").inner_text()
    page.screenshot(path=str(ARTIFACTS / "admin-approval-decided.png"), full_page=True)
    assert errors == [], errors
