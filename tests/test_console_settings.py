"""The console's settings page in a real browser against the real stack: alice makes an API key (shown once, copied
to the clipboard), uses it from a script (httpx), sees when it was last used, and revokes it; the key stops working
at once."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.helpers.browser import browser_page, console_stack, launch_chromium, screenshot


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    with console_stack(tmp_path_factory.mktemp("settings"), slots=1) as running:
        running.stack.create_user("alice", "alice-password-1")
        yield running


@pytest.fixture()
def browser():
    with launch_chromium() as launched:
        yield launched


def test_make_use_and_revoke_an_api_key_in_the_settings_page(browser, console):
    gateway = console.stack.base_url
    with browser_page(browser) as page:
        page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=console.url)
        page.goto(f"{console.url}/login")
        page.locator("button[data-lang='en']").click()
        page.fill("#login-username", "alice")
        page.fill("#login-password", "alice-password-1")
        page.click("#login-submit")
        page.wait_for_url(re.compile(r".*/finetune$"))
        page.get_by_role("link", name="Settings", exact=True).click()
        page.wait_for_url(f"{console.url}/settings")
        page.get_by_text("No API keys yet.").wait_for()

        page.fill("[data-testid=api-key-name]", "nightly CI")
        page.locator("input[data-scope=submit]").check()
        assert page.locator("input[data-scope=read]").is_disabled()  # granted by submit
        page.click("[data-testid=api-key-create]")
        reveal = page.locator("[data-testid=api-key-reveal]")
        reveal.wait_for()
        key = page.locator("[data-testid=api-key-secret]").input_value()
        assert key.startswith("bgk_")
        assert "shown this once" in reveal.inner_text()
        page.click("[data-testid=api-key-copy]")
        page.get_by_role("button", name="Copied").wait_for()
        assert page.evaluate("navigator.clipboard.readText()") == key

        row = page.locator("tr[data-key-id]")
        row.wait_for()
        assert "nightly CI" in row.inner_text() and "submit" in row.inner_text()
        assert row.locator("[data-testid=api-key-last-used]").inner_text() == "never"
        screenshot(page, "settings-api-keys")

        page.click("[data-testid=api-key-done]")
        assert page.locator("[data-testid=api-key-secret]").count() == 0
        assert key not in page.content()  # shown once: the list has only its prefix
        assert key[:10] in row.inner_text()

        with httpx.Client(base_url=gateway, timeout=30, headers={"authorization": f"Bearer {key}"}) as script:
            me = script.get("/api/auth/me")
            assert me.status_code == 200 and me.json()["username"] == "alice"
            assert script.get("/api/finetune/tasks").status_code == 200

            page.reload()
            row = page.locator("tr[data-key-id]")
            row.wait_for()
            assert row.locator("[data-testid=api-key-last-used]").inner_text() != "never"

            row.get_by_role("button", name="Revoke").click()
            assert "nightly CI" in page.get_by_role("dialog").inner_text()
            page.click("[data-testid=confirm-ok]")
            page.get_by_text("Revoked “nightly CI”").wait_for()
            page.get_by_text("No API keys yet.").wait_for()
            refused = script.get("/api/auth/me")
            assert refused.status_code == 401
