"""The admin's task list as an operator sees it: headless Chromium at 1366 px, sidebars open.

A real server (pytest-django's live_server), a real login through the form, and
the layout as the browser computed it.
"""

import shutil
from datetime import timedelta

import pytest
from django.utils import timezone
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from tests.browser.conftest import wait_for
from tests.factories import PASSWORD, AdminFactory, NodeFactory, TaskFactory

# Debian's packages `chromium` and `chromium-driver`.
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.django_db(transaction=True)
COLUMNS = ["task_name", "node", "status_badge", "deadline", "overdue", "active", "created"]


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1366,900")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def log_in(browser, live_server):
    admin = AdminFactory()
    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys(admin.email)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    # The next page, once it has loaded: a lookup right after the click raced it.
    wait_for(browser, "#user-tools")  # signed in


def test_the_task_list_fits_1366_px_with_every_column_in_view(browser, live_server):
    node = NodeFactory(name="Worker Node 3")
    long_name = (
        "Rebuild the full-text search index for the customer documents archive (all regions)"
    )
    TaskFactory(name=long_name, assigned_node=node, locked_at=timezone.now() - timedelta(hours=1))
    TaskFactory.create_batch(5, assigned_node=node)
    log_in(browser, live_server)

    browser.get(f"{live_server.url}/admin/tasks/task/")

    assert browser.find_element(By.ID, "nav-sidebar").is_displayed()
    results = browser.find_element(By.CSS_SELECTOR, ".results")
    assert results.get_property("scrollWidth") <= results.get_property("clientWidth")
    right_edge = results.rect["x"] + results.rect["width"]
    for column in COLUMNS:
        header = browser.find_element(By.CSS_SELECTOR, f"#result_list th.column-{column}")
        assert header.is_displayed()
        assert header.rect["x"] + header.rect["width"] <= right_edge + 1, column
    name = browser.find_element(By.XPATH, f"//span[@title='{long_name}']")
    line = float(
        browser.execute_script("return getComputedStyle(arguments[0]).lineHeight", name)[:-2]
    )
    assert name.rect["height"] <= 2 * line + 1  # two lines at most


def test_overdue_shows_as_a_red_alarm(browser, live_server):
    TaskFactory(name="Late", locked_at=timezone.now() - timedelta(hours=1))
    log_in(browser, live_server)

    browser.get(f"{live_server.url}/admin/tasks/task/")

    alarm = browser.find_element(By.CSS_SELECTOR, "#result_list .task-overdue")
    assert alarm.text == "OVERDUE"
    red, green, blue = (
        int(part) for part in alarm.value_of_css_property("background-color")[5:-1].split(",")[:3]
    )
    assert red > 180 and green < 80 and blue < 80
