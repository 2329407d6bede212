"""The console's webhooks panel in a real browser against the real stack: alice adds an endpoint (its secret shown
once), a task of hers runs, her receiver on loopback gets the signed events (verified with the secret the page
showed), and the panel's delivery log shows every try, a failed one included."""

from __future__ import annotations

import re

import pytest
from standardwebhooks import Webhook

from tests.helpers.browser import browser_page, console_stack, launch_chromium, screenshot
from tests.helpers.tasks import ENDED, wait_for_task
from tests.helpers.webhook_receiver import Receiver


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    env = {"BUGAGARIC_TRAINER_PLUGINS": "tests.helpers.line_trainer", "BUGAGARIC_WEBHOOK_ALLOW_PRIVATE_URLS": "1",
           "BUGAGARIC_WEBHOOK_BACKOFF_BASE_SECONDS": "0.3", "BUGAGARIC_WEBHOOK_POLL_SECONDS": "0.2"}
    with console_stack(tmp_path_factory.mktemp("console-webhooks"), slots=1, extra_env=env) as running:
        running.stack.create_user("alice", "alice-password-1")
        yield running


@pytest.fixture()
def browser():
    with launch_chromium() as launched:
        yield launched


def test_add_an_endpoint_and_follow_its_deliveries_in_the_settings_page(browser, console):
    import httpx

    with Receiver() as receiver, browser_page(browser) as page:
        # The first try of the success event fails: the log must show it, then the try that worked.
        refused: list[str] = []

        def plan(path, body, seen):
            if body["type"] == "task.succeeded" and not refused:
                refused.append(body["type"])
                return 500
            return 200

        receiver.plans["/ci"] = plan
        page.goto(f"{console.url}/login")
        page.locator("button[data-lang='en']").click()
        page.fill("#login-username", "alice")
        page.fill("#login-password", "alice-password-1")
        page.click("#login-submit")
        page.wait_for_url(re.compile(r".*/finetune$"))
        page.get_by_role("link", name="Settings", exact=True).click()
        page.wait_for_url(f"{console.url}/settings")
        page.get_by_text("No webhook endpoints yet.").wait_for()

        page.click("[data-testid=webhook-create]")
        page.get_by_text("Give an http:// or https:// URL.").wait_for()
        page.fill("[data-testid=webhook-url]", receiver.url("/ci"))
        page.fill("[data-testid=webhook-description]", "CI notifier")
        page.click("[data-testid=webhook-create]")
        page.locator("[data-testid=webhook-reveal]").wait_for()
        secret = page.locator("[data-testid=webhook-secret]").input_value()
        assert secret.startswith("whsec_")
        page.click("[data-testid=webhook-done]")
        assert secret not in page.content()
        row = page.locator("tr[data-webhook-id]")
        assert "CI notifier" in row.inner_text() and "task.stopped" in row.inner_text()

        token = console.stack.login("alice", "alice-password-1")
        with httpx.Client(base_url=console.stack.base_url, timeout=30,
                          headers={"authorization": f"Bearer {token}"}) as api:
            started = api.post("/api/finetune/start", json={"type": "line-test", "config": {"lines": 2}})
            assert started.status_code == 201, started.text
            task_id = started.json()["id"]
            wait_for_task(api, task_id, lambda t: t["status"] in ENDED)

        page.click("[data-testid=webhook-log-toggle]")
        succeeded = page.locator("tr[data-delivery-id]", has_text="task.succeeded")
        for _ in range(100):  # the retry lands a moment after the first try: refresh until it shows
            state = succeeded.locator("[data-testid=webhook-delivery-state]")
            if succeeded.count() and "delivered" in state.inner_text():
                break
            page.click("[data-testid=webhook-log-refresh]")
            page.wait_for_timeout(300)
        tries = succeeded.locator("[data-testid=webhook-attempt]")
        assert tries.count() == 2
        assert "500" in tries.nth(0).inner_text() and "next try" in tries.nth(0).inner_text()
        assert "200" in tries.nth(1).inner_text()
        assert task_id in succeeded.inner_text()
        screenshot(page, "settings-webhooks")

        answered = [r for r in receiver.at("/ci") if r.status == 200]
        assert sorted(r.payload["type"] for r in answered) == ["task.started", "task.succeeded"]
        for request in receiver.at("/ci"):
            assert Webhook(secret).verify(request.body, request.headers)["data"]["task"]["id"] == task_id
