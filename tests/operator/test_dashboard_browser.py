"""The dashboard in a real browser against a real server process (see tests.operator.browser)."""

from __future__ import annotations

import re

import pytest

from tests.operator.browser import ARTIFACTS, WAIT_MS, http

pytestmark = pytest.mark.browser


def test_operator_approves_live_and_sees_new_trades_without_reloading(live_server_process, browser):
    base, tokens = live_server_process
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(WAIT_MS)
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    navigations: list[str] = []
    page.on(
        "framenavigated",
        lambda frame: navigations.append(frame.url) if frame == page.main_frame else None,
    )

    # given: the demo operator signs in and the page is live
    page.goto(f"{base}/dashboard/")
    assert "/dashboard/login/" in page.url
    page.get_by_label("Username").fill("operator")
    page.get_by_label("Password").fill("operator-demo-pass")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("html[data-dashboard-ready='true']")
    page.wait_for_selector("#connection-state[data-state='open']")
    navigations_after_login = len(navigations)

    # the seeded order waiting for approval is in the queue
    approval_rows = page.locator("#approvals-body tr")
    assert approval_rows.count() == 1
    row = approval_rows.first
    assert "Alice Momentum" in row.inner_text()
    trade_id = row.get_attribute("data-trade-id")
    trade_row = page.locator(f"#trades-body tr[data-trade-id='{trade_id}']")
    assert trade_row.get_attribute("data-status") == "pending_approval"
    # statuses read as words; the deadline as a countdown and a date, not a bare time of day
    assert trade_row.locator("[data-field='status']").inner_text() == "pending approval"
    expires = row.locator("[data-field='expires']").inner_text()
    assert re.fullmatch(r"in 2[34] h \d+ min · [A-Z][a-z]{2} \d{1,2}, \d\d:\d\d [AP]M", expires), (
        expires
    )
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-pending.png"), full_page=True)
    agent_row = page.locator("#agents-body tr", has_text="Alice Momentum")
    cash_before = agent_row.locator("[data-field='cash']").inner_text()
    positions_before = agent_row.locator("[data-field='positions']").inner_text()

    # when: the operator approves it
    row.get_by_role("button", name=re.compile(r"^Approve ")).click()

    # then: the trade turns filled and the agent's cash and portfolio value change, live
    page.wait_for_selector(f"#trades-body tr[data-trade-id='{trade_id}'][data-status='filled']")
    page.wait_for_function(
        """([cash, positions]) => {
            const row = [...document.querySelectorAll('#agents-body tr')]
                .find((r) => r.textContent.includes('Alice Momentum'));
            return row.querySelector('[data-field="cash"]').textContent !== cash
                && row.querySelector('[data-field="positions"]').textContent !== positions;
        }""",
        arg=[cash_before, positions_before],
    )
    assert page.locator("#approvals-body tr").count() == 0

    # when: alice's program places an order over the REST API
    agent_id = page.locator("#agents-body tr", has_text="Alice Mean Reversion").get_attribute(
        "data-agent-id"
    )
    status, created = http(
        "POST",
        f"{base}/api/v1/agents/{agent_id}/trades",
        token=tokens["alice"],
        body={"symbol": "AAPL", "side": "buy", "type": "market", "quantity": "2"},
    )
    assert status == 201, created

    # then: it appears in the trades table without a reload
    new_row = page.locator(f"#trades-body tr[data-trade-id='{created['id']}']")
    new_row.wait_for()
    assert "buy 2 AAPL" in new_row.inner_text()
    page.wait_for_selector(
        f"#trades-body tr[data-trade-id='{created['id']}'][data-status='filled']"
    )

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert len(navigations) == navigations_after_login, navigations
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    assert problems == []
