"""A real browser for the admin tests: Debian's chromium, headless, through chromedriver.

A missing browser fails the tests with the command that installs it (never a skip).
A failing test leaves a screenshot in BROWSER_ARTIFACTS (default tmp/browser/).
"""

import os
import shutil
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.factories import PASSWORD

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
ARTIFACTS = Path(os.environ.get("BROWSER_ARTIFACTS", ROOT / "tmp" / "browser"))
# Every wait is bounded: a page that never comes fails in seconds, not minutes.
WAIT_SECONDS = 15


def pytest_collection_modifyitems(config, items):
    """Every test here drives the browser: marked so, whatever its module says, so the
    fast tier (`-m "not browser …"`) leaves them all out."""
    for item in items:
        if Path(item.path).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="module")
def chromium():
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found: run `make browser-deps` "
            "(apt-get install chromium chromium-driver)",
            pytrace=False,
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_SECONDS * 2)
    yield driver
    driver.quit()


@pytest.fixture
def browser(chromium, live_server, settings, request):
    """The browser, on plain http: the live server has no TLS for Secure cookies."""
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    settings.DASHBOARD_CACHE_SECONDS = 0
    chromium.delete_all_cookies()
    chromium.base_url = live_server.url
    yield chromium
    report = getattr(request.node, "report_call", None)
    if report is None or report.failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / f"{request.node.name}.png"
        chromium.save_screenshot(str(shot))
        print(f"screenshot of the failure: {shot}")
    # Off the live server before its database goes: no request may outlive the test.
    chromium.get("about:blank")


def save_picture(target: Path, shoot) -> None:
    """A picture for the docs: `shoot(path)` saves a screenshot there, kept in 256
    colours (Pillow), a third of the size and the same to the eye."""
    from PIL import Image

    target.parent.mkdir(parents=True, exist_ok=True)
    shoot(str(target))
    image = Image.open(target).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        target, optimize=True
    )


def wait_for(driver, css: str):
    return WebDriverWait(driver, WAIT_SECONDS).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
    )


def text_of(driver, css: str) -> str:
    """The text of the element `css` names, read again if the page's live refresh
    (live.js) swaps the element out between the find and the read."""
    return WebDriverWait(
        driver, WAIT_SECONDS, ignored_exceptions=[StaleElementReferenceException]
    ).until(lambda d: d.find_element(By.CSS_SELECTOR, css).text)


def wait_until_replaced(driver, element) -> None:
    """Wait until `element` has left the page (the next page replaced it).

    Selenium's `staleness_of` knows only StaleElementReferenceException; chromedriver
    may instead answer a node caught mid-navigation with "Node with given id does not
    belong to the document", which means the same: the element is gone.
    """

    def gone(_):
        try:
            element.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as error:
            if "does not belong to the document" in str(error):
                return True
            raise
        return False

    WebDriverWait(driver, WAIT_SECONDS).until(gone)


def log_in(driver, user) -> None:
    driver.get(f"{driver.base_url}/admin/")
    wait_for(driver, "#id_username").send_keys(user.email)
    driver.find_element(By.ID, "id_password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_for(driver, "#tm-status-by-node")
