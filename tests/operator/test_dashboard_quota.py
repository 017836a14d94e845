"""The operator's dashboard shows each agent's orders today against its daily trade limit, and
says so in plain words when a quota refuses an agent's orders: its own daily trade limit, or
the metering service's quota (``CheckQuota``) — rather than the agent just going quiet."""

from __future__ import annotations

import urllib.error
import uuid

import pytest
from django.test import Client

from agents.demo import DEMO_DAILY_TRADE_LIMIT
from grpc_clients import metering as metering_api
from grpc_clients.registry import get_metering_client
from tests.helpers import buffered_events, submit
from tests.operator.browser import ARTIFACTS, WAIT_MS, http

NO_APPROVAL = {
    "auto_approval_limit": "1000000",
    "approval_budget_fraction": "1",
    "max_position_fraction": "1",
}


@pytest.fixture
def operator_page(operator):
    def get() -> tuple[dict, str]:
        browser = Client()
        browser.force_login(operator)
        response = browser.get("/dashboard/")
        assert response.status_code == 200
        return response.context["state"], response.content.decode()

    return get


def buy(client, agent):
    return submit(client, agent, symbol="AAPL", side="buy", quantity="1")


def row_of(state: dict, agent) -> dict:
    return next(row for row in state["agents"] if row["id"] == str(agent.pk))


@pytest.mark.usefixtures("prices")
def test_an_agent_at_its_daily_trade_limit_shows_its_count_and_an_alert(
    owner_client, agent_factory, operator_page, django_capture_on_commit_callbacks
):
    # given: an agent allowed 3 orders a day and another allowed 5
    with django_capture_on_commit_callbacks(execute=True):
        capped = agent_factory(
            name="Alice Momentum", config={**NO_APPROVAL, "daily_trade_limit": 3}
        )
        calm = agent_factory(name="Bob Arbitrage", config={**NO_APPROVAL, "daily_trade_limit": 5})

    # when: the first uses its whole day through the API and one more is refused; the other
    # places one order
    assert [buy(owner_client, capped).status_code for _ in range(3)] == [201, 201, 201]
    refused = buy(owner_client, capped)
    assert refused.status_code == 429
    assert buy(owner_client, calm).status_code == 201
    state, html = operator_page()

    # then: the page counts the orders as the server does and says why the first stopped
    assert (row_of(state, capped)["orders_today"], row_of(state, capped)["daily_trade_limit"]) == (
        3,
        3,
    )
    assert (row_of(state, calm)["orders_today"], row_of(state, calm)["daily_trade_limit"]) == (1, 5)
    assert "Orders today" in html
    assert (
        "Alice Momentum: daily trade limit of 3 orders reached; orders refused (429) until "
        "midnight UTC" in html
    )
    assert "Bob Arbitrage:" not in html


@pytest.mark.usefixtures("prices")
def test_a_refusal_by_the_metering_service_quota_shows_on_the_dashboard(
    owner_client, agent_factory, operator_page, django_capture_on_commit_callbacks
):
    # given: an agent whose own limit is far away, but whose trade_executions quota on the
    # metering service is 2 a day (set there, as that service's operator may)
    with django_capture_on_commit_callbacks(execute=True):
        agent = agent_factory(
            name="Alice Momentum", config={**NO_APPROVAL, "daily_trade_limit": 50}
        )
    get_metering_client().ingest_event(
        metering_api.UsageEvent(
            transaction_id=f"test-config-{uuid.uuid4().hex}",
            agent_id=str(agent.pk),
            code="trade_executions",
            quantity=0,
            properties={"quota_limit": "2", "quota_period": "daily"},
        )
    )
    _, before = operator_page()
    assert "metering service refused" not in before

    # when: its third order of the day is refused by CheckQuota
    assert [buy(owner_client, agent).status_code for _ in range(2)] == [201, 201]
    refused = buy(owner_client, agent)
    assert refused.status_code == 429
    assert refused.json()["limit"] == 2
    assert buy(owner_client, agent).status_code == 429
    state, html = operator_page()

    # then: the dashboard says who was refused, by which quota, and until when
    assert row_of(state, agent)["orders_today"] == 2
    assert row_of(state, agent)["daily_trade_limit"] == 50
    assert "Alice Momentum: the metering service refused an order at " in html
    assert (
        "its trade_executions quota of 2 per day being used up; orders refused (429) until "
        "midnight UTC" in html
    )
    assert "daily trade limit of 50 orders reached" not in html

    # and: pages already open heard it live, once for the day however often it was refused
    live = [
        event.data
        for event in buffered_events(agent, event="quota.warning")
        if event.data.get("refused")
    ]
    assert len(live) == 1
    assert (live[0]["metric_code"], live[0]["limit"], live[0]["period"]) == (
        "trade_executions",
        2,
        "daily",
    )


@pytest.mark.browser
def test_an_open_dashboard_counts_orders_and_shows_a_quota_refusal_live(
    live_server_process, browser
):
    base, tokens = live_server_process
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{base}/dashboard/login/")
    page.get_by_label("Username").fill("operator")
    page.get_by_label("Password").fill("operator-demo-pass")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("#connection-state[data-state='open']")
    row = page.locator("#agents-body tr", has_text="Alice Mean Reversion")
    agent_id = row.get_attribute("data-agent-id")
    orders = row.locator("[data-field='orders-today']")
    before, limit = (int(part) for part in orders.inner_text().split(" / "))
    assert limit == DEMO_DAILY_TRADE_LIMIT
    assert page.locator("#quota-alerts p").count() == 0

    # given: the metering service's quota lets the agent place one more order today
    get_metering_client().ingest_event(
        metering_api.UsageEvent(
            transaction_id=f"test-config-{uuid.uuid4().hex}",
            agent_id=agent_id,
            code="trade_executions",
            quantity=0,
            properties={"quota_limit": str(before + 1), "quota_period": "daily"},
        )
    )
    order = {"symbol": "AAPL", "side": "buy", "type": "market", "quantity": "1"}
    url = f"{base}/api/v1/agents/{agent_id}/trades"

    # when: alice's program places it, then one more
    assert http("POST", url, token=tokens["alice"], body=order)[0] == 201
    with pytest.raises(urllib.error.HTTPError) as refused:
        http("POST", url, token=tokens["alice"], body=order)
    assert refused.value.code == 429

    # then: without a reload, the count moved and the refusal is on the page
    page.wait_for_function(
        "([node, text]) => node.textContent === text",
        arg=[orders.element_handle(), f"{before + 1} / {DEMO_DAILY_TRADE_LIMIT}"],
    )
    alert = page.locator("#quota-alerts p[data-kind='metering_quota']")
    alert.wait_for()
    assert alert.inner_text().startswith(
        "Alice Mean Reversion: the metering service refused an order at "
    )
    assert alert.inner_text().endswith(
        f"its trade_executions quota of {before + 1} per day being used up; orders refused "
        "(429) until midnight UTC"
    )
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-quota.png"), full_page=True)
