"""The `kibo` connection in the Airflow UI: form metadata, the Test button, and a real browser."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from packaging.version import Version

from airflow_provider_kibo_cancel.connection import KiboConnectionSettings
from airflow_provider_kibo_cancel.emulator import KiboEmulator
from devtools.airflow_local import AirflowEnv, AirflowStack
from tests.support import APP_KEY, SHARED_SECRET, TENANT, debian_chromium

DECLARATIVE_FORM = Version(version("apache-airflow-core")) >= Version("3.2")
DOCS = Path(__file__).parents[2] / "docs"  # KIBO_UPDATE_SCREENSHOT=1 refreshes the README's pictures


@pytest.fixture(scope="module")
def emu() -> Iterator[KiboEmulator]:
    with KiboEmulator(tenants=(TENANT,), clients={APP_KEY: SHARED_SECRET}) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    env = AirflowEnv(tmp_path_factory.mktemp("ui_home"), tmp_path_factory.mktemp("ui_dags"))
    env.migrate()
    with AirflowStack(
        env, components=("api-server",), extra_env={"AIRFLOW__CORE__TEST_CONNECTION": "Enabled"}
    ) as stack:
        yield stack


def kibo_meta(stack: AirflowStack) -> dict[str, Any]:
    (meta,) = [m for m in stack.api("GET", "/ui/connections/hook_meta") if m["connection_type"] == "kibo"]
    return meta  # type: ignore[no-any-return]


def test_hook_meta_shows_the_kibo_form(api_server: AirflowStack) -> None:
    meta = kibo_meta(api_server)
    assert meta["hook_name"] == "Kibo Commerce"
    assert meta["hook_class_name"] == "airflow_provider_kibo_cancel.hooks.kibo.KiboHook"
    standard = meta["standard_fields"]
    assert (standard["login"]["title"], standard["password"]["title"], standard["host"]["title"]) == (
        "Application Key",
        "Shared Secret",
        "Base URL override",
    )
    assert "Optional" in standard["host"]["placeholder"]
    assert standard["port"]["hidden"] is True and standard["url_schema"]["hidden"] is True
    extra = meta["extra_fields"]
    assert list(extra) == [
        "tenant_id",
        "environment",
        "site_id",
        "timeout",
        "access_token",
        "order_id_field",
        "tenant_requests_per_second",
        "rate_limit_conn_id",
        "auth_url",
    ]
    assert extra["tenant_id"]["schema"]["title"] == "Tenant ID"
    assert extra["tenant_id"]["description"].startswith("Your Kibo tenant number")
    assert extra["environment"]["value"] == "sandbox"
    assert extra["access_token"]["schema"]["format"] == "password"
    if DECLARATIVE_FORM:  # 3.2+ reads conn-fields; 3.0/3.1 build plain text fields from the hook's wtforms
        assert extra["tenant_id"]["schema"]["pattern"] == "^[0-9]+$"
        assert extra["environment"]["schema"]["enum"] == ["sandbox", "production"]
        assert extra["order_id_field"]["schema"]["enum"] == ["orderId", "orderID"]


def connection_body(url: str, password: str) -> dict[str, Any]:
    return {
        "connection_id": "kibo_test_button",
        "conn_type": "kibo",
        "host": url,
        "login": APP_KEY,
        "password": password,
        "extra": json.dumps({"tenant_id": TENANT, "environment": "sandbox"}),
    }


def test_the_test_button_succeeds_against_the_emulator(api_server: AirflowStack, emu: KiboEmulator) -> None:
    result = api_server.api("POST", "/api/v2/connections/test", json=connection_body(emu.url, SHARED_SECRET))
    assert result == {"status": True, "message": f"Connected to Kibo tenant {TENANT} (sandbox) at {emu.url}"}


def test_the_test_button_names_a_wrong_secret(api_server: AirflowStack, emu: KiboEmulator) -> None:
    result = api_server.api(
        "POST", "/api/v2/connections/test", json=connection_body(emu.url, "wrong-secret-42")
    )
    assert result["status"] is False
    assert result["message"].startswith(
        "Kibo refused the Application Key / Shared Secret (login / password) of connection "
    )
    assert "wrong-secret-42" not in result["message"]


def test_the_test_button_names_an_unreachable_host(api_server: AirflowStack) -> None:
    with KiboEmulator() as gone:
        url = gone.url
    result = api_server.api("POST", "/api/v2/connections/test", json=connection_body(url, SHARED_SECRET))
    assert result["status"] is False and result["message"].startswith("Kibo is unreachable")


@pytest.fixture(scope="module")
def chromium() -> str:
    return debian_chromium()


@pytest.mark.newest_only  # the React form differs between releases; hook_meta above covers each
def test_a_kibo_connection_added_in_the_browser(
    api_server: AirflowStack, emu: KiboEmulator, chromium: str, tmp_path: Path
) -> None:
    # Imported here: playwright is installed for the newest Airflow's browser tests only.
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 1700})
            page.goto(f"{api_server.url}/connections", wait_until="networkidle")
            page.get_by_role("button", name="Add Connection").click()
            page.locator("input[name=connection_id]").fill("kibo_from_ui")
            connection_type = page.get_by_role("combobox").first
            connection_type.click()
            connection_type.type("Kibo Commerce")
            page.get_by_role("option", name="Kibo Commerce").click()
            page.locator("input[name=host]").fill(emu.url)
            page.locator("input[name=login]").fill(APP_KEY)
            page.locator("input[name=password]").fill(SHARED_SECRET)
            page.get_by_role("button", name="Extra Fields", exact=True).click()
            page.locator("#element_tenant_id").fill(TENANT)
            page.locator("#element_site_id").fill("50525")
            # The environment dropdown starts at the safe choice.
            assert page.locator("input[name=element_environment]").input_value() == "sandbox"
            page.wait_for_timeout(1000)  # let the accordion finish opening before the picture
            page.get_by_role("dialog").screenshot(path=str(tmp_path / "connection-form-extra.png"))
            page.get_by_role("button", name="Standard Fields", exact=True).click()
            page.wait_for_timeout(1000)
            page.get_by_role("dialog").screenshot(path=str(tmp_path / "connection-form.png"))
            if os.environ.get("KIBO_UPDATE_SCREENSHOT"):
                for picture in ("connection-form.png", "connection-form-extra.png"):
                    shutil.copy(tmp_path / picture, DOCS / picture)
            page.get_by_role("button", name="Save").click()
            page.get_by_text("kibo_from_ui").first.wait_for(timeout=15000)
        finally:
            browser.close()

    stored = api_server.api("GET", "/api/v2/connections/kibo_from_ui")
    assert (stored["conn_type"], stored["host"], stored["login"]) == ("kibo", emu.url, APP_KEY)
    extra = json.loads(stored["extra"])
    assert (extra["tenant_id"], extra["environment"], extra["site_id"]) == (TENANT, "sandbox", "50525")
    # Exactly what the hook reads: the same settings a task would get.
    settings = KiboConnectionSettings.from_connection(
        "kibo_from_ui", host=stored["host"], login=stored["login"], password=SHARED_SECRET, extra=extra
    )
    assert (settings.base_url, settings.tenant_id, settings.site_id) == (emu.url, TENANT, "50525")
    # And the stored connection (secret included) passes the Test button.
    tested = api_server.api(
        "POST", "/api/v2/connections/test", json={"connection_id": "kibo_from_ui", "conn_type": "kibo"}
    )
    assert tested["status"] is True, tested
