"""The browser console at /console, driven in a real headless Chromium (Debian's, through its
chromedriver: nothing is downloaded) against a real API on loopback, a real Celery worker and
beat, the simulator and a real webhook receiver.

One browser serves the module. The page is used as a person would: log in with a key, follow
links, press buttons; every wait is on the page (WebDriverWait) or the API (wait_until).
Screenshots of the main pages go to a temporary folder, and to docs/console-*.png when
WATCHER_SCREENSHOTS=docs.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as expected
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import SimControl, Stack
from tests.support import wait_until
from tests.test_api import TOKEN, ApiClient, api_stack, error_of, ok, serve
from tests.test_tenancy import Tenant, make_tenant
from watcher.api.routes_console import CONTENT_SECURITY_POLICY, STATIC, STATIC_PREFIX
from watcher.receiver import Receiver

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
)
# Markup in data the page shows: it must come out as these characters, never as an element.
HOSTILE = '<img src=x onerror="window.__pwned = 1">'

# What would parse data as markup; the scripts build the page with text nodes only.
HTML_SINKS = re.compile(r"\.(inner|outer)HTML\s*=|insertAdjacentHTML|document\.write")
# Where a key could outlive the page or be read by another script of the origin: never used.
STORAGE = re.compile(r"\b(sessionStorage|localStorage|indexedDB)\s*[.\[]|document\.cookie")
HOUSE_LIMIT = 400  # lines per module

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(  # never skipped in CI: there, a missing browser is a failure
        not os.environ.get("CI") and not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
        reason="needs Debian's chromium and chromium-driver (./scripts/bootstrap installs them)",
    ),
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver's path given: Selenium Manager is skipped, nothing is downloaded.
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def screenshot(
    browser: WebDriver, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Path]:
    folder = tmp_path_factory.mktemp("console-screenshots")

    def take(name: str) -> Path:
        path = folder / f"console-{name}.png"
        assert browser.save_screenshot(str(path)), name
        if os.environ.get("WATCHER_SCREENSHOTS") == "docs":
            shutil.copyfile(path, ROOT / "docs" / path.name)
        return path

    return take


@dataclass
class World:
    """Two apps with a payment, a subscription and a delivery each, and an admin key."""

    api: ApiClient
    admin_key: str
    a: Tenant
    b: Tenant


def populate(api: ApiClient, tenant: Tenant, hook: Receiver, description: str) -> None:
    sub = {"url": hook.url(f"/{tenant.name}"), "description": description}
    tenant.subscription = ok(api.post("/v1/subscriptions", sub, token=tenant.key), 201)["id"]
    order = {"amount_msats": 21_000, "description": f"order of {tenant.name}",
             "metadata": {"note": HOSTILE, "who": f"customer-of-{tenant.name}"}}  # fmt: skip
    tenant.payment = ok(api.post("/v1/payments", order, token=tenant.key), 201)["id"]


def delivered(api: ApiClient, tenant: Tenant, event_type: str) -> str | None:
    """The id of the tenant's delivery of that type once it succeeded."""
    page = ok(api.get("/v1/deliveries", params={"subscription_id": tenant.subscription}))
    done = [d["id"] for d in page["items"]
            if d["event_type"] == event_type and d["status"] == "succeeded"]  # fmt: skip
    return done[0] if done else None


@pytest.fixture
def world(
    make_stack: Callable[..., Stack], sim_control: SimControl, receivers: Callable[[], Receiver]
) -> Iterator[World]:
    stack = api_stack(make_stack)
    stack.start_worker(concurrency=4)
    stack.start_beat()
    hook = receivers()
    with serve(stack) as api:
        a, b = make_tenant(api, "a"), make_tenant(api, "b")
        admin_key = ok(api.post("/v1/keys", {"admin": True}), 201)["key"]
        populate(api, a, hook, HOSTILE)
        populate(api, b, hook, "b's own hook")
        sim_control.settle(a.payment)  # A's: a payment.completed webhook; B's: a test one
        b.event = ok(api.post(f"/v1/subscriptions/{b.subscription}/test", token=b.key), 202)[
            "event_id"
        ]
        a.delivery = wait_until(
            lambda: delivered(api, a, "payment.completed"), timeout=60, message="A's webhook"
        )
        b.delivery = wait_until(lambda: delivered(api, b, "webhook.test"), message="B's test")
        yield World(api, admin_key, a, b)


# --- driving the page -------------------------------------------------------------------------


def wait(driver: WebDriver, timeout: float = 20) -> WebDriverWait[WebDriver]:
    return WebDriverWait(
        driver, timeout, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
    )


def find(driver: WebDriver, css: str) -> WebElement:
    return wait(driver).until(lambda d: d.find_element(By.CSS_SELECTOR, css), message=css)


def row_ids(driver: WebDriver, table: str) -> list[str]:
    """The ids of a list's rows, once it has loaded."""
    find(driver, f"#{table} tbody tr")
    rows = driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr[data-id]")
    return [str(r.get_attribute("data-id")) for r in rows]


def log_in(driver: WebDriver, base: str, key: str) -> None:
    driver.get(base + "/console")
    submit_key(driver, key)


def submit_key(driver: WebDriver, key: str) -> None:
    field = find(driver, "#login-key")
    assert field.get_dom_attribute("name") is None  # never part of a form submission
    field.send_keys(key)
    driver.find_element(By.ID, "login-submit").click()
    wait(driver).until(lambda d: d.find_element(By.ID, "nav").is_displayed(), message="logged in")
    assert key not in driver.current_url
    assert stored(driver) == 0  # the key is in the page's memory only


def stored(driver: WebDriver) -> int:
    """How many entries the origin's web storage holds (the console writes none)."""
    return int(driver.execute_script("return sessionStorage.length + localStorage.length"))


def reload_forgets_the_key(driver: WebDriver, key: str) -> None:
    """A reload starts with no key: the login form again; logging in brings the page back."""
    driver.refresh()
    wait(driver).until(lambda d: d.find_element(By.ID, "login").is_displayed(), message="login")
    assert not driver.find_element(By.ID, "nav").is_displayed()
    assert driver.find_element(By.ID, "view").text == ""
    submit_key(driver, key)


def log_out(driver: WebDriver) -> None:
    driver.find_element(By.ID, "logout").click()
    wait(driver).until(lambda d: d.find_element(By.ID, "login").is_displayed(), message="out")
    assert stored(driver) == 0


def open_section(driver: WebDriver, section: str, table: str) -> list[str]:
    driver.find_element(By.CSS_SELECTOR, f'#nav a[data-section="{section}"]').click()
    wait(driver).until(lambda d: d.find_elements(By.CSS_SELECTOR, f"#{table}"), message=table)
    return row_ids(driver, table)


def follow(driver: WebDriver, table: str, item_id: str, then: str) -> WebElement:
    driver.find_element(By.CSS_SELECTOR, f'#{table} tr[data-id="{item_id}"] a').click()
    return find(driver, then)


def attempt_codes(driver: WebDriver) -> list[str]:
    cells = driver.find_elements(By.CSS_SELECTOR, "#attempts tbody tr td.code")
    return [c.text for c in cells]


def assert_inert(driver: WebDriver) -> None:
    """The hostile markup is on the page as text, and made no element and ran nothing."""
    assert HOSTILE in driver.find_element(By.ID, "view").text
    assert driver.find_elements(By.CSS_SELECTOR, "#view img") == []
    assert driver.execute_script("return window.__pwned === undefined")


# --- the tests --------------------------------------------------------------------------------


def test_console_against_the_real_stack(
    world: World, browser: WebDriver, screenshot: Callable[[str], Path]
) -> None:
    log_in(browser, world.api.base_url, world.admin_key)
    assert "admin" in browser.find_element(By.ID, "who").text
    admin_sees_everything_as_text(world, browser, screenshot)
    redeliver_shows_the_new_attempt(world, browser, screenshot)
    log_out(browser)
    log_in(browser, world.api.base_url, world.a.key)
    assert "app key" in browser.find_element(By.ID, "who").text
    app_a_sees_only_its_own(world, browser)
    log_out(browser)
    log = browser.get_log("browser")
    assert [e for e in log if "Content Security Policy" in e["message"]] == []


def admin_sees_everything_as_text(
    world: World, browser: WebDriver, screenshot: Callable[[str], Path]
) -> None:
    a, b = world.a, world.b
    assert {a.payment, b.payment} <= set(row_ids(browser, "payments"))
    screenshot("payments")
    follow(browser, "payments", a.payment, "#timeline")
    wait(browser).until(lambda d: "completed" in d.find_element(By.ID, "timeline").text)
    assert_inert(browser)  # A's metadata
    listed = open_section(browser, "subscriptions", "subscriptions")
    assert {a.subscription, b.subscription} <= set(listed)
    assert_inert(browser)  # A's description, in the list
    follow(browser, "subscriptions", a.subscription, "#health dl")
    assert_inert(browser)  # and on its page
    health = ok(world.api.get(f"/v1/subscriptions/{a.subscription}/health"))
    assert health["attempts"] >= 1, health  # A's payment.completed webhook, delivered
    shown = health_panel(browser)
    assert shown["Attempts"] == str(health["attempts"])
    assert shown["Succeeded"] == str(health["succeeded"])
    assert shown["Failed"] == str(health["failed"])
    assert shown["Success rate"] == f"{health['success_rate'] * 100:.1f} %"
    assert shown["Latency p50"] == f"{health['latency_ms']['p50']:.1f} ms"
    assert shown["Latency p99"] == f"{health['latency_ms']['p99']:.1f} ms"
    assert shown["Last failure"] == "none"
    assert shown["Enabled"] == "enabled"
    screenshot("subscription")


def health_panel(driver: WebDriver) -> dict[str, str]:
    """The health card's fields, label -> text."""
    labels = driver.find_elements(By.CSS_SELECTOR, "#health dl dt")
    values = driver.find_elements(By.CSS_SELECTOR, "#health dl dd")
    return {str(t.text): str(d.text) for t, d in zip(labels, values, strict=True)}


def redeliver_shows_the_new_attempt(
    world: World, browser: WebDriver, screenshot: Callable[[str], Path]
) -> None:
    a, b = world.a, world.b
    assert {a.delivery, b.delivery} <= set(open_section(browser, "deliveries", "deliveries"))
    follow(browser, "deliveries", a.delivery, "#attempts tbody tr")
    assert attempt_codes(browser) == ["200"]
    assert "ok" in browser.find_element(By.ID, "attempts").text  # the receiver's body
    browser.find_element(By.ID, "redeliver").click()
    wait(browser, 30).until(lambda d: attempt_codes(d) == ["200", "200"], message="new attempt")
    screenshot("deliveries")


def app_a_sees_only_its_own(world: World, browser: WebDriver) -> None:
    a, b = world.a, world.b
    assert row_ids(browser, "payments") == [a.payment]
    assert open_section(browser, "subscriptions", "subscriptions") == [a.subscription]
    own = [d["id"] for d in ok(world.api.get("/v1/deliveries", token=a.key))["items"]]
    assert open_section(browser, "deliveries", "deliveries") == own
    assert a.delivery in own
    assert b.delivery not in own
    assert b.event not in open_section(browser, "events", "events")
    assert "customer-of-b" not in browser.find_element(By.ID, "view").text
    browser.get(f"{world.api.base_url}/console#/deliveries/{b.delivery}")  # B's: as unknown
    wait(browser).until(lambda d: "404" in d.find_element(By.ID, "view").text, message="404")


def test_subscription_actions_from_the_page(
    make_stack: Callable[..., Stack], browser: WebDriver
) -> None:
    """No worker needed: every button's answer is the API's. Logged in with a bootstrap token."""
    with serve(api_stack(make_stack)) as api:
        log_in(browser, api.base_url, TOKEN)
        reload_forgets_the_key(browser, TOKEN)
        browser.get(f"{api.base_url}/console#/subscriptions")
        form = find(browser, "#create-form")
        form.find_element(By.NAME, "url").send_keys("http://127.0.0.1:9/made-in-the-console")
        form.find_element(By.NAME, "description").send_keys("first")
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        secret = find(browser, "#secret pre").text
        assert secret.startswith("whsec_"), secret
        sub_id = browser.current_url.rsplit("/", 1)[-1]
        assert ok(api.get(f"/v1/subscriptions/{sub_id}"))["description"] == "first"
        press(browser, "#send-test", then=flashed("Test event evt_"))
        assert not browser.find_elements(By.ID, "secret")  # shown once only
        press(browser, "#view form.recover button", then=flashed("Recover queued"))
        press(browser, "#rotate", then=lambda d: d.find_elements(By.ID, "secret"), confirm=True)
        rotated = browser.find_element(By.CSS_SELECTOR, "#secret pre").text
        assert rotated.startswith("whsec_")
        assert rotated != secret
        disabled = "#view .badge-disabled"
        press(browser, "#toggle-enabled", then=lambda d: d.find_elements(By.CSS_SELECTOR, disabled))
        assert ok(api.get(f"/v1/subscriptions/{sub_id}"))["enabled"] is False
        edit = browser.find_element(By.ID, "edit-form")
        edit.find_element(By.NAME, "description").clear()
        edit.find_element(By.NAME, "description").send_keys("second")
        edit.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait(browser).until(lambda d: "second" in view_text(d), message="saved")
        assert ok(api.get(f"/v1/subscriptions/{sub_id}"))["description"] == "second"
        log_out(browser)


def view_text(driver: WebDriver) -> str:
    return str(driver.find_element(By.ID, "view").text)


def flashed(text: str) -> Callable[[WebDriver], bool]:
    return lambda driver: text in driver.find_element(By.ID, "flash").text


def press(
    driver: WebDriver, css: str, then: Callable[[WebDriver], object], confirm: bool = False
) -> None:
    """Click a button (accepting the confirmation it asks for) and wait for its effect."""
    find(driver, css).click()
    if confirm:
        wait(driver, 5).until(expected.alert_is_present()).accept()
    wait(driver).until(then, message=css)


def test_the_page_is_served_with_a_strict_policy(make_stack: Callable[..., Stack]) -> None:
    with serve(api_stack(make_stack)) as api:
        page = requests.get(api.base_url + "/console", timeout=10)
        static = {
            name: requests.get(api.base_url + STATIC_PREFIX + name, timeout=10) for name in STATIC
        }
        for answer in (page, *static.values()):
            assert answer.status_code == 200, answer.url
            assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["referrer-policy"] == "no-referrer"
            assert "set-cookie" not in answer.headers
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-store"
        scripts = {name: a for name, a in static.items() if name.endswith(".js")}
        assert static["console.css"].headers["content-type"].startswith("text/css")
        assert '<script type="module" src="/console/static/main.js"></script>' in page.text
        assert "<script>" not in page.text
        assert " style=" not in page.text
        assert 'name="key"' not in page.text
        for name, script in scripts.items():
            assert script.headers["content-type"].startswith("text/javascript"), name
            assert not HTML_SINKS.search(script.text), name
            assert not STORAGE.search(script.text), name
            assert len(script.text.splitlines()) <= HOUSE_LIMIT, name
        # Every module main.js pulls in is one of the served files, by its fixed name.
        imported = {m for s in scripts.values() for m in re.findall(r'from "\./([\w.]+)"', s.text)}
        assert imported == set(scripts) - {"main.js"}, imported
        for path in ("/console/static/app.py", "/console/static/..%2f..%2fapp.py", "/console/x",
                     "/console/static/console.js", "/console/static/"):  # fmt: skip
            error_of(api.get(path, token=None), 404, "not_found")
        # No Swagger UI or ReDoc on this origin (their CDN script could read the page's key).
        for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
            error_of(api.get(path, token=None), 404, "not_found")
        error_of(api.get("/v1/payments", token=None), 401, "unauthorized")
        assert "/console" not in str(ok(api.get("/openapi.json", token=None))["paths"])
