"""The dashboard in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``)
driven by Selenium, against a real ``aptship serve`` (gunicorn, two workers) on loopback.

No browser is downloaded: the driver is ``/usr/bin/chromedriver`` given explicitly, so
Selenium Manager never runs.  The overview is saved to ``test-artifacts/overview.png``
and, with ``APTSHIP_UPDATE_SCREENSHOT=1``, to ``docs/img/overview.png`` for the docs.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.server.live import LiveServer, start_server
from tests.ui import SESSION_VAR, ReleaseEnv, build_release

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 15


@dataclass
class Live:
    env: ReleaseEnv
    server: LiveServer

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, gpg_key: tuple[Path, str]) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("ui-live")
    env = build_release(tmp / "release", gpg_key)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(SESSION_VAR, "browser-test-session-secret-0123456789")
        with start_server(env.config_path, tmp / "server", workers=2) as server:
            yield Live(env, server)
    logs = server.logs()
    assert "shared through storage" not in logs  # the configured secret is used
    for secret in env.secrets.values():
        assert secret not in logs, "a token leaked into the server log"


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            pytest.fail(f"{path} is missing: apt-get install -y chromium chromium-driver")
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never download
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1200,720",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


# -- helpers ------------------------------------------------------------------------------
def wait(driver: WebDriver) -> WebDriverWait[WebDriver]:
    return WebDriverWait(driver, WAIT)


def sign_in(driver: WebDriver, live: Live, who: str) -> None:
    driver.get(f"{live.url}/ui/")
    wait(driver).until(ec.url_contains("/ui/login"))
    driver.find_element(By.ID, "token").send_keys(live.env.secrets[who])
    driver.find_element(By.ID, "signin").click()
    wait(driver).until(ec.text_to_be_present_in_element((By.ID, "whoami"), who))


def cell(driver: WebDriver, package: str, channel: str) -> WebElement:
    return driver.find_element(
        By.CSS_SELECTOR, f'td[data-package="{package}"][data-channel="{channel}"]'
    )


def drift(element: WebElement) -> set[str]:
    return set((element.get_attribute("class") or "").split()) - {"cell"}


def flashed(driver: WebDriver, text: str) -> None:
    """Wait until a success flash containing ``text`` is shown (after a redirect)."""
    try:
        wait(driver).until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".flash"), text))
    except TimeoutException:
        pytest.fail(
            f"no flash {text!r}; page shows:\n{driver.find_element(By.TAG_NAME, 'main').text}"
        )
    assert "flash-ok" in (
        driver.find_element(By.CSS_SELECTOR, ".flash").get_attribute("class") or ""
    )


def confirm(driver: WebDriver, accept: bool, expected: str) -> None:
    alert = wait(driver).until(ec.alert_is_present())
    assert alert.text == expected
    if accept:
        alert.accept()
    else:
        alert.dismiss()


def session_of(driver: WebDriver) -> tuple[dict[str, str], str]:
    """The browser's session cookie (HttpOnly: only WebDriver can see it) and CSRF token."""
    cookie = driver.get_cookie("aptship_session")
    assert cookie is not None
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    csrf = driver.find_element(By.NAME, "csrf_token").get_attribute("value")
    assert csrf
    return {"aptship_session": cookie["value"]}, csrf


def save_overview(driver: WebDriver) -> None:
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    driver.refresh()  # without the sign-in message
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1200, max(int(height) + 120, 480))
    shot = artifacts / "overview.png"
    assert driver.save_screenshot(str(shot))
    if os.environ.get("APTSHIP_UPDATE_SCREENSHOT") == "1":
        (ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, ROOT / "docs" / "img" / "overview.png")


# -- tests --------------------------------------------------------------------------------
def test_release_manager_promotes_and_rolls_back(browser: WebDriver, live: Live) -> None:
    driver = browser
    sign_in(driver, live, "release")
    assert driver.current_url == f"{live.url}/ui/"

    # the matrix: pins, counts and drift markers
    staging_hello = cell(driver, "hello", "staging")
    assert staging_hello.text.startswith("1.0-1 2 kept")
    assert drift(staging_hello) == {"drift-behind", "drift-rollback"}
    marks = staging_hello.find_elements(By.CSS_SELECTOR, ".mark")
    assert [m.get_attribute("aria-label") for m in marks] == [
        "behind dev: 2.0-1 is newer",
        "rolled back: newest retained is 2.0-1",
    ]
    assert drift(cell(driver, "world", "staging")) == {"drift-behind"}
    assert drift(cell(driver, "tool", "prod")) == set()
    assert cell(driver, "world", "prod").text.startswith("1.0-1 1 kept")
    save_overview(driver)

    # without a CSRF token the server refuses even this promote token
    cookies, _csrf = session_of(driver)
    form = {"package": "world", "version": "2.0-1", "from": "dev"}
    bare = requests.post(
        f"{live.url}/ui/channels/staging/promote",
        data=form,
        cookies=cookies,
        allow_redirects=False,
        timeout=30,
    )
    assert bare.status_code == 403

    # promote world 2.0-1 dev -> staging: cancel the confirm first, then accept it
    button = cell(driver, "world", "dev").find_element(By.CSS_SELECTOR, "button.promote")
    assert button.text == "Promote to staging"
    button.click()
    confirm(driver, False, "Promote world 2.0-1 from dev to staging?")
    assert cell(driver, "world", "staging").text.startswith("1.0-1")
    cell(driver, "world", "dev").find_element(By.CSS_SELECTOR, "button.promote").click()
    confirm(driver, True, "Promote world 2.0-1 from dev to staging?")
    flashed(driver, "Promoted world 2.0-1 from dev to staging (was 1.0-1).")
    staging_world = cell(driver, "world", "staging")
    assert staging_world.text.startswith("2.0-1 2 kept")
    assert drift(staging_world) == set()
    assert drift(cell(driver, "world", "prod")) == {"drift-behind"}
    assert live.env.repo().pin_map("staging")["world"] == "2.0-1"

    # the history page shows it, by this token
    driver.find_element(By.LINK_TEXT, "History").click()
    wait(driver).until(ec.presence_of_element_located((By.ID, "audit")))
    first = driver.find_element(By.CSS_SELECTOR, "#audit tbody tr")
    assert first.get_attribute("data-action") == "promote"
    assert first.get_attribute("data-channel") == "staging"
    assert first.get_attribute("data-package") == "world"
    assert first.find_element(By.CSS_SELECTOR, "td.actor").text == "token:release"

    # roll back hello in dev from the package page
    driver.get(f"{live.url}/ui/packages/hello")
    dev = driver.find_element(By.ID, "channel-dev")
    assert dev.find_elements(By.TAG_NAME, "svg")
    dev.find_element(By.CSS_SELECTOR, "button.rollback").click()
    confirm(driver, True, "Roll back hello in dev from 2.0-1 to 1.0-1?")
    flashed(driver, "Rolled back hello in dev: 2.0-1 → 1.0-1.")
    assert driver.current_url == f"{live.url}/ui/packages/hello"
    driver.find_element(By.LINK_TEXT, "Overview").click()
    dev_hello = wait(driver).until(
        ec.presence_of_element_located(
            (By.CSS_SELECTOR, 'td[data-package="hello"][data-channel="dev"]')
        )
    )
    assert dev_hello.text.startswith("1.0-1 2 kept")
    assert drift(dev_hello) == {"drift-rollback"}
    assert (
        dev_hello.find_element(By.CSS_SELECTOR, ".mark-rollback").get_attribute("aria-label")
        == "rolled back: newest retained is 2.0-1"
    )

    driver.find_element(By.ID, "signout").click()
    wait(driver).until(ec.url_contains("/ui/login"))
    driver.get(f"{live.url}/ui/")
    assert "/ui/login" in driver.current_url


def test_reader_sees_no_buttons_and_cannot_forge_actions(browser: WebDriver, live: Live) -> None:
    driver = browser
    sign_in(driver, live, "reader")
    before = {ch: live.env.repo().pin_map(ch) for ch in ("dev", "staging", "prod")}
    assert cell(driver, "hello", "staging").text.startswith("1.0-1")
    assert driver.find_elements(By.CSS_SELECTOR, "button.promote, button.rollback") == []
    driver.get(f"{live.url}/ui/packages/hello")
    assert driver.find_elements(By.CSS_SELECTOR, "svg")
    assert driver.find_elements(By.CSS_SELECTOR, "button.promote, button.rollback") == []

    cookies, csrf = session_of(driver)
    forged = [
        ("staging/promote", {"package": "world", "version": "2.0-1", "from": "dev"}),
        ("staging/rollback", {"package": "hello"}),
    ]
    for action, form in forged:
        url = f"{live.url}/ui/channels/{action}"
        with_csrf = requests.post(
            url, data={**form, "csrf_token": csrf}, cookies=cookies, allow_redirects=False,
            timeout=30,
        )  # fmt: skip
        assert with_csrf.status_code == 403, with_csrf.text
        without = requests.post(url, data=form, cookies=cookies, allow_redirects=False, timeout=30)
        assert without.status_code == 403
    assert {ch: live.env.repo().pin_map(ch) for ch in before} == before
