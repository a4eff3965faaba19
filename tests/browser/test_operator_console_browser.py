"""The operator's console in a real browser at 1280 and 1440 px: node names on one line
wherever nodes are listed, the activity feed and its filters across task history and
node events, a sweep run's tasks by cause; and the docs' pictures of these pages.

DOCS_SCREENSHOTS=docs also saves the pictures the docs show (dashboard.png,
node-page.png, task-page.png, sweep-runs.png, confirmation.png, activity.png), from one
scene:

    DOCS_SCREENSHOTS=docs .venv/bin/pytest tests/browser -k docs_pictures
"""

import os
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tasks.models import Task
from tests.browser.conftest import (
    ROOT,
    log_in,
    save_picture,
    text_of,
    wait_for,
    wait_until_replaced,
)
from tests.browser.scene import operator_scene
from tests.browser.test_dashboard_browser import no_horizontal_overflow, result_rows

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDTHS = [1280, 1440]
# The tallest picture: a long page is cut here rather than make a huge file.
PICTURE_MAX_HEIGHT = 1500


def one_line(driver, element) -> bool:
    """The element is one line high: its height is its line height (a wrapped name
    is two or three of them)."""
    line = driver.execute_script(
        "var style = getComputedStyle(arguments[0]);"
        "var line = parseFloat(style.lineHeight);"
        "return isNaN(line) ? 1.3 * parseFloat(style.fontSize) : line;",
        element,
    )
    return element.rect["height"] <= line + 2


def node_name_pages(scene) -> list[str]:
    return [
        "/admin/",
        "/admin/accounts/user/",
        "/admin/tasks/task/",
        "/admin/tasks/taskhistory/",
        "/admin/activity/",
        f"/admin/node/{scene['batch'].pk}/",
    ]


@pytest.mark.parametrize("width", WIDTHS)
def test_node_names_stay_on_one_line_and_no_page_overflows(browser, settings, width):
    browser.set_window_size(width, 1000)
    scene = operator_scene(settings)
    log_in(browser, scene["admin"])
    wrapped, overflowing, shown = [], [], set()
    for path in node_name_pages(scene):
        browser.get(f"{browser.base_url}{path}")
        wait_for(browser, "#content")
        names = [
            name
            for name in browser.find_elements(By.CSS_SELECTOR, ".tm-node-name")
            if name.is_displayed()
        ]
        assert names, f"no node name on {path}"
        wrapped += [(path, name.text) for name in names if not one_line(browser, name)]
        shown |= {(path, name.get_attribute("title")) for name in names}
        if not no_horizontal_overflow(browser):
            overflowing.append(path)

    assert wrapped == []
    assert overflowing == []
    # A name cut short ends in "…" on screen; its title has the whole of it, and the email.
    assert ("/admin/", f"{scene['batch'].name} <{scene['batch'].email}>") in shown


@pytest.mark.parametrize("width", WIDTHS)
def test_the_activity_feed_shows_and_filters_task_history_and_node_events(browser, settings, width):
    browser.set_window_size(width, 1000)
    scene = operator_scene(settings)
    media = scene["media"]
    log_in(browser, scene["admin"])

    browser.find_element(By.ID, "tm-activity").click()
    wait_for(browser, "#tm-activity tbody tr")
    assert browser.find_elements(By.CSS_SELECTOR, "tr.tm-activity-node")
    assert browser.find_elements(By.CSS_SELECTOR, "tr.tm-activity-task")
    assert no_horizontal_overflow(browser)

    shown = browser.find_element(By.CSS_SELECTOR, "#tm-activity tbody")
    Select(browser.find_element(By.ID, "id_node")).select_by_visible_text(str(media))
    browser.find_element(By.CSS_SELECTOR, "#tm-activity-filters input[type=submit]").click()
    wait_until_replaced(browser, shown)
    wait_for(browser, "#tm-activity tbody tr")
    events = browser.find_elements(By.CSS_SELECTOR, "tr.tm-activity-node")
    assert [row.find_elements(By.TAG_NAME, "td")[2].text for row in events] == [
        "Cordon",
        "Labels change",
    ]
    assert "kernel upgrade at 16:00 UTC" in events[0].text

    def filter_by(**choices):
        shown = browser.find_element(By.CSS_SELECTOR, "#tm-activity tbody")
        for field, text in choices.items():
            Select(browser.find_element(By.ID, f"id_{field}")).select_by_visible_text(text)
        browser.find_element(By.CSS_SELECTOR, "#tm-activity-filters input[type=submit]").click()
        # The next page, not the one it replaces.
        wait_until_replaced(browser, shown)
        return wait_for(browser, "#tm-activity tbody").find_elements(By.TAG_NAME, "tr")

    # An event's kind as the action: the node's task rows leave, its cordon stays.
    rows = filter_by(action="Cordon")
    assert len(rows) == 1 and "kernel upgrade" in rows[0].text
    # A cause is a task's: node events leave; the one task the sweep failed as expired stays.
    rows = filter_by(node="any node", action="any action", cause="Deadline passed")
    assert len(rows) == 1
    assert "Pending → Failed" in rows[0].text and "system (sweep)" in rows[0].text
    assert no_horizontal_overflow(browser)


@pytest.mark.parametrize("width", WIDTHS)
def test_a_sweep_run_shows_its_tasks_by_cause_and_each_count_leads_to_them(
    browser, settings, width
):
    browser.set_window_size(width, 1000)
    scene = operator_scene(settings)
    log_in(browser, scene["admin"])
    browser.get(f"{browser.base_url}/admin/tasks/sweeprun/")

    causes = wait_for(browser, "#result_list td.field-by_cause").text
    assert "Node lost: 1 failed, 6 moved" in causes
    assert "Deadline passed: 1 failed" in causes
    assert no_horizontal_overflow(browser)
    browser.find_element(By.CSS_SELECTOR, 'a.tm-run-cause[data-count="node_lost_moved"]').click()
    wait_for(browser, "#result_list")
    assert result_rows(browser) == 6
    names = {cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "td.field-task_link")}
    assert names == {task.name for task in scene["lost"]}


def picture(driver, name: str) -> None:
    """With DOCS_SCREENSHOTS=<folder>, save the page as <folder>/<name> at 1280 px wide
    and as tall as the page (at most PICTURE_MAX_HEIGHT)."""
    folder = os.environ.get("DOCS_SCREENSHOTS")
    if not folder:
        return
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(height, PICTURE_MAX_HEIGHT))
    save_picture(ROOT / Path(folder) / name, driver.save_screenshot)
    driver.set_window_size(1280, 1000)


def test_docs_pictures_of_the_console_after_a_failover(browser, settings):
    browser.set_window_size(1280, 1000)
    scene = operator_scene(settings)
    batch, render, gpu = scene["batch"], scene["render"], scene["gpu"]
    log_in(browser, scene["admin"])
    browser.execute_script("window.sessionStorage.setItem('tm-live-paused', '1');")

    # The dashboard after the failover: the moves by cause, work at risk, backlogs.
    browser.get(f"{browser.base_url}/admin/")
    assert wait_for(browser, "#tm-moved-node-lost").text == "6"
    assert no_horizontal_overflow(browser), "the dashboard scrolls sideways at 1280 px"
    # Nor does a table stick out of the content into the page's margin (the docs'
    # picture, of #content-main, cut the nodes' last column).
    assert browser.execute_script(
        "var main = document.getElementById('content-main');"
        "return main.scrollWidth <= main.clientWidth;"
    )
    if os.environ.get("DOCS_SCREENSHOTS"):
        browser.set_window_size(1280, 1400)
        target = ROOT / Path(os.environ["DOCS_SCREENSHOTS"]) / "dashboard.png"
        save_picture(target, browser.find_element(By.ID, "content-main").screenshot)
        browser.set_window_size(1280, 1000)

    # The dead worker's page: what was done to it, by the sweep, and why.
    browser.get(f"{browser.base_url}/admin/node/{batch.pk}/")
    moved = text_of(browser, "#tm-node-moved-away")
    assert moved.count("the sweep") == 6 and "Node lost" in moved
    assert text_of(browser, "#tm-node-liveness-state") == "Down"
    picture(browser, "node-page.png")

    # A running task's page: its progress, payload and the actions on it.
    browser.get(f"{browser.base_url}/admin/tasks/task/{scene['running'].pk}/change/")
    assert "In progress for 4 min" in wait_for(browser, "#tm-task-elapsed").text
    page = browser.find_element(By.ID, "content").text
    assert "frame 1,420 of 2,400" in page and "episode-042.mov" in page
    for action in ("tm-task-reassign", "tm-task-fail"):
        assert browser.find_element(By.ID, action).is_displayed()
    picture(browser, "task-page.png")

    browser.get(f"{browser.base_url}/admin/tasks/sweeprun/")
    assert "Node lost: 1 failed, 6 moved" in wait_for(browser, "#result_list").text
    picture(browser, "sweep-runs.png")

    # The never-seen node's work at risk, moved on its page: the confirmation first.
    browser.get(f"{browser.base_url}/admin/node/{render.pk}/")
    Select(wait_for(browser, "#id_node")).select_by_visible_text(str(gpu))
    browser.find_element(By.CSS_SELECTOR, "#tm-reassign input[type=submit]").click()
    changes = wait_for(browser, ".tm-confirm-changes").text
    assert f"4 open task(s) move from {render} to {gpu}" in changes
    picture(browser, "confirmation.png")
    assert Task.objects.filter(assigned_node=render).count() == 4  # nothing moved yet

    # The feed: the sweep's moves, the cordon and the labels changes, newest first.
    browser.get(f"{browser.base_url}/admin/activity/")
    feed = wait_for(browser, "#tm-activity").text
    assert "Node lost" in feed and "kernel upgrade" in feed
    picture(browser, "activity.png")
    browser.execute_script("window.sessionStorage.clear();")


@pytest.mark.parametrize("width", WIDTHS)
def test_the_activity_feeds_filters_show_a_long_node_email_whole(browser, width):
    """A node chosen in the Node (or By) filter shows its name and email whole: the
    boxes were capped at 16em, which cut a long email at its domain."""
    from tests.factories import AdminFactory, NodeFactory

    browser.set_window_size(width, 1000)
    node = NodeFactory(
        name="GPU render box", email="render-box-eu-west-1-rack-42-slot-07@gpu.example.com"
    )
    log_in(browser, AdminFactory())

    browser.get(f"{browser.base_url}/admin/activity/?node={node.pk}&actor={node.pk}")
    for field in ("id_node", "id_actor"):
        box = wait_for(browser, f"#{field}")
        assert Select(box).first_selected_option.text == str(node)
        # The chosen option's text, in the box's own font, fits inside the box.
        text_width = browser.execute_script(
            "var box = arguments[0], style = getComputedStyle(box);"
            "var context = document.createElement('canvas').getContext('2d');"
            "context.font = style.fontSize + ' ' + style.fontFamily;"
            "return context.measureText(box.options[box.selectedIndex].text).width;",
            box,
        )
        assert text_width <= box.rect["width"] - 16, (field, text_width, box.rect["width"])
    assert no_horizontal_overflow(browser)


# A phone held upright. Headless chromium will not make its window narrower than 500 px,
# so the page is given the phone's width as its viewport (DevTools' device emulation).
PHONE_WIDTH = 390


def test_at_a_phones_width_wide_tables_scroll_in_their_panels_not_the_page(browser, settings):
    """The dashboard's status and node tables, the activity feed and a node page's
    tables are wider than a phone: each scrolls sideways inside its own panel, as
    Django's own lists do, rather than make the whole page scroll sideways (header,
    messages and forms with it) with its last columns out of sight."""
    scene = operator_scene(settings)
    log_in(browser, scene["admin"])
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": PHONE_WIDTH, "height": 844, "deviceScaleFactor": 1, "mobile": False},
    )
    try:
        wide, squeezed = [], []
        for path in ["/admin/", "/admin/activity/", f"/admin/node/{scene['batch'].pk}/"]:
            browser.get(f"{browser.base_url}{path}")
            wait_for(browser, "#content")
            page = browser.execute_script(
                "var page = document.documentElement; return [page.scrollWidth, page.clientWidth];"
            )
            if page[0] > page[1]:
                wide.append((path, page))
            # Nor squeezed to the window: no cell so narrow that a word breaks after
            # every letter (a node page's "Demo Admin" read "D e m o A d m in").
            narrow = browser.execute_script(
                "return Array.from(document.querySelectorAll('#content td'))"
                ".filter(function (td) { return td.innerText.trim().length > 3"
                " && td.getBoundingClientRect().width < 60; })"
                ".map(function (td) { return td.innerText; });"
            )
            if narrow:
                squeezed.append((path, narrow))
        assert wide == []
        assert squeezed == []
        # Not cut off either: the dashboard's node table scrolls inside its panel.
        browser.get(f"{browser.base_url}/admin/")
        panel = wait_for(browser, "#tm-nodes")
        assert panel.get_property("scrollWidth") > panel.get_property("clientWidth")
        assert panel.value_of_css_property("overflow-x") == "auto"
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
