"""A real Chromium (Debian's, driven by its chromium-driver through Selenium) for the console
tests, cut off from every host but this machine: a page that needed the internet would break."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import (
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
    # Every host name fails to resolve except the loopback: the pages must work offline.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
)
# `make console-screenshots` sets it to docs/console: each test then saves its pages there.
SCREENSHOTS = os.environ.get("BATCHOPS_CONSOLE_SCREENSHOTS")


def missing() -> str | None:
    """What to install when the browser is not there (the test fails with it, it never skips)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists() and shutil.which(Path(path).name) is None:
            return f"{path} is missing: `make browser` (apt-get install chromium chromium-driver)"
    return None


@contextlib.contextmanager
def chromium() -> Iterator[WebDriver]:
    problem = missing()
    assert problem is None, problem
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


class Browser:
    """The console as a person uses it: go to a page, read what it shows, click, type."""

    def __init__(self, driver: WebDriver, base_url: str) -> None:
        self.driver = driver
        self.base_url = base_url

    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    def sign_in(self, token: str) -> None:
        """Through the sign-in form: the one on screen (which knows where to go back to), or
        a fresh one."""
        if not self.path.startswith("/console/login"):
            self.open("/console/login")
        self.type("#token", token)
        self.click("form button[type=submit]")

    def signed_in(self, token: str) -> None:
        """`sign_in`, then wait for its answer: a page opened before it arrives is replaced."""
        self.sign_in(token)
        self.until(lambda: not self.path.startswith("/console/login"), "signed in")

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, css: str = "main") -> str:
        # A live part may be swapped (htmx), or the page replaced, between finding it and
        # reading it: read it again.
        for _ in range(5):
            try:
                return str(self.find(css).text)
            except WebDriverException as exc:
                if not _gone(exc):
                    raise
        return str(self.find(css).text)

    def type(self, css: str, text: str) -> None:
        field = self.find(css)
        field.clear()
        field.send_keys(text)

    def click(self, css: str) -> None:
        self.find(css).click()

    def click_link(self, text: str) -> None:
        self.driver.find_element(By.LINK_TEXT, text).click()

    def until(self, condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
        """Wait for what a person would wait to see; fail naming it."""
        try:
            WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(
                lambda _: _unless_gone(condition)
            )
        except TimeoutException:
            page = self.driver.find_element(By.TAG_NAME, "body").text[:2000]
            raise AssertionError(
                f"{what}: not seen within {timeout}s; the page shows:\n{page}"
            ) from None

    def shows(self, text: str, css: str = "body", timeout: float = 15.0) -> None:
        self.until(lambda: text in self.text(css), f"{text!r} in {css}", timeout)

    @property
    def path(self) -> str:
        return str(self.driver.current_url).removeprefix(self.base_url)

    def screenshot(self, name: str) -> None:
        """The whole page as docs/console/<name>.png, when screenshots are asked for."""
        if not SCREENSHOTS:
            return
        height = self.driver.execute_script(
            "return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)"
        )
        # A headless window cannot grow past its screen: emulate a taller one instead.
        metrics = {"width": 1280, "height": min(int(height) + 20, 2000)}
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {**metrics, "deviceScaleFactor": 1, "mobile": False},
        )
        directory = Path(SCREENSHOTS)
        directory.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(directory / f"{name}.png"))
        self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def _gone(exc: WebDriverException) -> bool:
    """The element was replaced under us: stale, or (Chromium's other wording) a node that no
    longer belongs to the document."""
    return isinstance(exc, StaleElementReferenceException) or (
        "does not belong to the document" in (exc.msg or "")
    )


def _unless_gone(condition: Callable[[], bool]) -> bool:
    """`condition()`, False when what it read was replaced meanwhile (look again)."""
    try:
        return condition()
    except WebDriverException as exc:
        if _gone(exc):
            return False
        raise
