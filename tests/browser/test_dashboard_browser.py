"""The operator's path through the admin in a real browser: log in, read the dashboard,
follow a number to its tasks, open a node, reassign its work and read the history.

DASHBOARD_SCREENSHOT=docs/dashboard.png also saves the picture of the dashboard the README shows.
"""

import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from accounts.models import User
from tasks.models import Task, TaskStatus
from tasks.services import sweep_run
from tests.browser.conftest import ROOT, log_in, save_picture, text_of, wait_for
from tests.factories import AdminFactory, NodeFactory, TaskFactory, fleet

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def no_horizontal_overflow(driver) -> bool:
    """Neither the page nor a list's own scroll box (Django's .results scrolls sideways,
    hiding its last columns) is wider than the window."""
    return driver.execute_script(
        "var page = document.documentElement;"
        "var boxes = Array.from(document.querySelectorAll('.results'));"
        "return page.scrollWidth <= page.clientWidth"
        " && boxes.every(function (b) { return b.scrollWidth <= b.clientWidth; });"
    )


def result_rows(driver) -> int:
    return len(driver.find_elements(By.CSS_SELECTOR, "#result_list tbody tr"))


def test_dashboard_numbers_are_the_databases_and_lead_to_those_tasks(browser):
    data = fleet()
    log_in(browser, AdminFactory())

    row = browser.find_element(
        By.CSS_SELECTOR, f'#tm-status-by-node tr[data-node="{data["alive"].pk}"]'
    )
    shown = {
        link.get_attribute("data-status"): int(link.text)
        for link in row.find_elements(By.CSS_SELECTOR, "a.tm-count")
    }
    expected = {
        status: Task.objects.filter(assigned_node=data["alive"], active=True, status=status).count()
        for status in TaskStatus.values
    }
    assert (
        shown
        == expected
        == {
            "pending": 3,
            "in_progress": 2,
            "completed": 4,
            "failed": 1,
            "cancelled": 0,
        }
    )
    assert browser.find_element(By.ID, "tm-overdue").text == "2"
    assert browser.find_element(By.ID, "tm-due-soon").text == "1"
    assert "Figures as of" in browser.find_element(By.ID, "tm-staleness").text
    if os.environ.get("DASHBOARD_SCREENSHOT"):
        target = ROOT / Path(os.environ["DASHBOARD_SCREENSHOT"])
        browser.set_window_size(1280, 1400)
        save_picture(target, browser.find_element(By.ID, "content-main").screenshot)
        browser.set_window_size(1280, 1000)

    row.find_element(By.CSS_SELECTOR, 'a.tm-count[data-status="pending"]').click()
    wait_for(browser, "#result_list")
    assert result_rows(browser) == 3
    names = {cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#result_list tbody th")}
    assert names == {task.name for task in data["tasks"]["pending"]}

    browser.back()
    browser.find_element(By.ID, "tm-overdue").click()
    wait_for(browser, "#result_list")
    assert result_rows(browser) == 2


CHART_TEXT = """
var chart = document.querySelector('#tm-outcomes .tm-chart');
var box = function (css) { return chart.querySelector(css).getBoundingClientRect(); };
return {
    tick: box('.tm-tick').height,
    now: box('#tm-chart-now').height,
    chart: Math.round(chart.getBoundingClientRect().width),
    panel: Math.round(document.getElementById('tm-outcomes').getBoundingClientRect().width),
    height: Math.round(chart.getBoundingClientRect().height),
};
"""


def test_the_charts_labels_keep_their_size_at_any_width_and_it_fills_its_panel(browser):
    """The chart was one SVG scaled to its panel: its 12 px labels were 21 px at 1920 px
    and 29 at 2560, and it grew half as tall again."""
    TaskFactory.create_batch(3, status=TaskStatus.COMPLETED)
    log_in(browser, AdminFactory())
    measured = {}
    for width in (1280, 1920, 2560):
        browser.set_window_size(width, 1000)
        browser.refresh()
        wait_for(browser, "#tm-chart-now")
        measured[width] = browser.execute_script(CHART_TEXT)
    browser.set_window_size(1280, 1000)

    for sizes in measured.values():
        assert sizes["chart"] == sizes["panel"]
        assert (sizes["tick"], sizes["now"], sizes["height"]) == (
            measured[1280]["tick"],
            measured[1280]["now"],
            measured[1280]["height"],
        )
    assert measured[1280]["tick"] <= 16


@pytest.mark.parametrize("width", [1280, 1440])
def test_reassign_a_nodes_two_open_tasks_from_its_page_and_read_their_history(browser, width):
    browser.set_window_size(width, 1000)
    source, target = NodeFactory(name="Source node"), NodeFactory(name="Target node")
    tasks = TaskFactory.create_batch(2, assigned_node=source)
    TaskFactory(assigned_node=source, status=TaskStatus.COMPLETED)
    deadlines = {task.pk: task.locked_at for task in tasks}
    log_in(browser, AdminFactory())

    browser.find_element(By.LINK_TEXT, "Source node").click()
    wait_for(browser, "#tm-node-actions")
    assert text_of(browser, "#tm-node-liveness-state") == "Never seen"
    # A node not alive is named with its liveness in the list.
    Select(browser.find_element(By.ID, "id_node")).select_by_visible_text(f"{target} (never seen)")
    browser.find_element(By.CSS_SELECTOR, "#tm-reassign input[type=submit]").click()

    # A confirmation page first: how many move, where, and what happens to deadlines.
    changes = wait_for(browser, ".tm-confirm-changes").text
    assert f"2 open task(s) move from {source} to {target}" in changes
    assert "The other 2 keep their own deadline." in changes
    assert no_horizontal_overflow(browser)
    assert Task.objects.filter(assigned_node=target).count() == 0
    browser.find_element(By.ID, "tm-confirm-submit").click()

    message = wait_for(browser, "ul.messagelist li").text
    assert message == (
        f"Reassigned 2 open task(s) from {source} to {target}, back to pending. "
        "Renewed 0 stale deadline(s) to now + 60 min; 2 kept their own."
    )
    for task in Task.objects.filter(pk__in=deadlines):
        assert task.locked_at == deadlines[task.pk]
    assert {
        task.assigned_node_id for task in Task.objects.filter(pk__in=[t.pk for t in tasks])
    } == {target.pk}

    for task in tasks:
        browser.get(f"{browser.base_url}/admin/tasks/task/{task.pk}/change/")
        page = wait_for(browser, "#content").text
        assert "Assignee change" in page
        assert str(target) in page and str(source) in page


@pytest.mark.parametrize("width", [1280, 1440])
def test_deactivate_asks_on_a_red_confirmation_page(browser, width):
    browser.set_window_size(width, 1000)
    node = NodeFactory(name="Doomed node")
    NodeFactory()  # the reassign form (its harmless button) shows with a node to move to
    log_in(browser, AdminFactory())
    browser.get(f"{browser.base_url}/admin/node/{node.pk}/")
    button = wait_for(browser, "#tm-deactivate input[type=submit]")
    harmless = browser.find_element(By.CSS_SELECTOR, "#tm-reassign input[type=submit]")
    colour = button.value_of_css_property("background-color")
    assert colour != harmless.value_of_css_property("background-color")
    button.click()

    wait_for(browser, ".tm-confirm-changes")
    assert "can no longer log in" in browser.find_element(By.ID, "tm-confirm").text
    confirm = browser.find_element(By.ID, "tm-confirm-submit")
    assert confirm.value_of_css_property("background-color") == colour
    assert no_horizontal_overflow(browser)
    node.refresh_from_db()
    assert node.is_active
    confirm.click()
    assert "Deactivated" in wait_for(browser, "ul.messagelist li").text
    node.refresh_from_db()
    assert not node.is_active


@pytest.mark.parametrize("width", [1280, 1440])
def test_retry_and_fail_a_task_from_its_own_page(browser, width):
    browser.set_window_size(width, 1000)
    failed = TaskFactory(status=TaskStatus.FAILED)
    running = TaskFactory(status=TaskStatus.IN_PROGRESS)
    log_in(browser, AdminFactory())

    browser.get(f"{browser.base_url}/admin/tasks/task/{failed.pk}/change/")
    wait_for(browser, "#tm-task-retry input[type=submit]").click()
    assert "Back to pending" in wait_for(browser, "ul.messagelist li").text
    assert Task.objects.get(pk=failed.pk).status == TaskStatus.PENDING

    browser.get(f"{browser.base_url}/admin/tasks/task/{running.pk}/change/")
    assert "In progress for" in wait_for(browser, "#tm-task-elapsed").text
    assert "View task (in progress)" in browser.find_element(By.TAG_NAME, "h1").text
    assert no_horizontal_overflow(browser)
    browser.find_element(By.CSS_SELECTOR, "#tm-task-fail input[type=submit]").click()
    assert wait_for(browser, "ul.messagelist li").text == "Marked failed (cause: admin)."
    assert Task.objects.get(pk=running.pk).failure_cause == "admin"


@pytest.mark.parametrize("width", [1280, 1440])
def test_the_sweep_runs_page_leads_to_the_rows_a_run_wrote(browser, width, settings):
    settings.FAILOVER = "reassign"
    browser.set_window_size(width, 1000)
    dead, alive = NodeFactory(name="dead"), NodeFactory(name="alive")
    now = timezone.now()
    User.objects.filter(pk=dead.pk).update(last_seen=now - timedelta(minutes=10))
    User.objects.filter(pk=alive.pk).update(last_seen=now)
    moved = TaskFactory.create_batch(2, assigned_node=dead)
    sweep_run(batch_size=100)
    log_in(browser, AdminFactory())

    browser.find_element(By.ID, "tm-sweep-runs").click()
    wait_for(browser, "#result_list")
    assert no_horizontal_overflow(browser)
    browser.find_element(By.CSS_SELECTOR, "#result_list td.field-reassigned a").click()
    wait_for(browser, "#result_list")
    assert result_rows(browser) == 2
    names = {cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "td.field-task_link")}
    assert names == {task.name for task in moved}


def live_refreshes(driver) -> int:
    control = driver.find_element(By.ID, "tm-live-control")
    return int(control.get_attribute("data-refreshes") or 0)


def wait_refresh(driver, after: int) -> None:
    WebDriverWait(driver, 15).until(lambda d: live_refreshes(d) > after)


@pytest.mark.parametrize("width", [1280, 1440])
def test_the_dashboard_and_a_node_page_update_themselves_until_paused(browser, width):
    browser.set_window_size(width, 1000)
    node = NodeFactory(name="Watched node")
    log_in(browser, AdminFactory())
    browser.execute_script("window.tmNotReloaded = true;")
    total = browser.find_element(By.CSS_SELECTOR, '#tm-totals a[data-status="pending"]')
    assert total.text == "0"
    as_of = browser.find_element(By.ID, "tm-as-of").text

    TaskFactory(assigned_node=node)
    wait_refresh(browser, live_refreshes(browser))

    assert browser.execute_script("return window.tmNotReloaded === true;")
    total = browser.find_element(By.CSS_SELECTOR, '#tm-totals a[data-status="pending"]')
    assert total.text == "1"
    assert browser.find_element(By.ID, "tm-as-of").text != as_of
    assert no_horizontal_overflow(browser)

    # The node page too; paused, it stays as it is.
    browser.get(f"{browser.base_url}/admin/node/{node.pk}/")
    wait_for(browser, "#tm-live-control")
    browser.find_element(By.CSS_SELECTOR, "#tm-live-control button").click()
    assert "Paused" in browser.find_element(By.CSS_SELECTOR, ".tm-live-state").text
    before = live_refreshes(browser)
    TaskFactory(assigned_node=node)
    time.sleep(6)  # longer than one interval: no refresh may come while paused
    assert live_refreshes(browser) == before
    pending = browser.find_element(By.CSS_SELECTOR, '#tm-node-tasks a[data-status="pending"]')
    assert pending.text == "1"

    browser.find_element(By.CSS_SELECTOR, "#tm-live-control button").click()
    wait_refresh(browser, before)
    pending = browser.find_element(By.CSS_SELECTOR, '#tm-node-tasks a[data-status="pending"]')
    assert pending.text == "2"
    browser.execute_script("window.sessionStorage.clear();")


LISTS = [
    "/admin/tasks/task/",
    "/admin/tasks/task/?status__exact=failed",
    "/admin/tasks/task/?overdue=yes",
    "/admin/tasks/taskhistory/",
    "/admin/tasks/sweeprun/",
    "/admin/accounts/user/",
    "/admin/",
]


@pytest.mark.parametrize("width", [1280, 1440])
def test_no_list_overflows_sideways(browser, width):
    browser.set_window_size(width, 1000)
    data = fleet()
    # Real fleets' names are long: a list must still fit with one.
    User.objects.filter(pk=data["alive"].pk).update(name="batch-runner-us-east-2b-spot-17")
    TaskFactory(
        assigned_node=data["alive"],
        status=TaskStatus.FAILED,
        failure_cause="node_reported",
        failure_reason="a long reason " * 30,
    )
    sweep_run(batch_size=100)
    log_in(browser, AdminFactory())
    wide = []
    for path in LISTS:
        browser.get(f"{browser.base_url}{path}")
        wait_for(browser, "#content")
        if not no_horizontal_overflow(browser):
            widths = browser.execute_script(
                "return Array.from(document.querySelectorAll('.results'))"
                ".map(function (b) { return [b.scrollWidth, b.clientWidth]; });"
            )
            wide.append((path, widths))
    assert wide == []


@pytest.mark.parametrize("width", [1280, 1440])
def test_a_task_with_unbroken_words_fits_its_page_and_the_list(browser, width):
    """A name, details and a cancel reason holding one long word (a path, a URL, a
    token): the task's read-only page and the task list wrap it, neither scrolling
    sideways nor cutting it (a form row hides what sticks out of it)."""
    from tasks.services import task_cancel

    browser.set_window_size(width, 1000)
    node = NodeFactory()
    path = "s3://exports-eu-west-1/customers/2026/12/07/full_reindex_of_the_archive_shard_0042"
    url = "https://storage.example.com/exports/archive.tar.zst?X-Signature=" + "a1b2c3d4" * 40
    task = TaskFactory(name=path, details=url, assigned_node=node, status=TaskStatus.IN_PROGRESS)
    task_cancel(task_id=task.pk, reason=url)
    log_in(browser, AdminFactory())

    wide = []
    for page in (f"/admin/tasks/task/{task.pk}/change/", "/admin/tasks/task/"):
        browser.get(f"{browser.base_url}{page}")
        wait_for(browser, "#content")
        cut = browser.execute_script(
            "return Array.from(document.querySelectorAll('.form-row'))"
            ".filter(function (row) { return row.scrollWidth > row.clientWidth; })"
            ".map(function (row) { return row.className; });"
        )
        if cut or not no_horizontal_overflow(browser):
            wide.append((page, page_widths(browser), cut))
    assert wide == []


@pytest.mark.parametrize("width", [1280, 1440])
def test_a_progress_message_that_is_one_long_word_fits_the_task_page(browser, width):
    """The latest progress is said in a sentence at the top of a running task's page:
    a message naming a file (one long word) wraps there, the page never scrolls sideways."""
    from tasks.services import task_claim, task_report_progress

    browser.set_window_size(width, 1000)
    node = NodeFactory()
    TaskFactory(assigned_node=node)
    task = task_claim(node=node)
    shard = "customers_2026_12_07_full_export_shard_0042_of_0100_"
    message = f"writing {shard * 3}part.parquet"
    task_report_progress(task_id=task.pk, node=node, percent=42.5, message=message)
    log_in(browser, AdminFactory())

    browser.get(f"{browser.base_url}/admin/tasks/task/{task.pk}/change/")
    assert "part.parquet" in wait_for(browser, "#tm-task-elapsed").text
    assert no_horizontal_overflow(browser), page_widths(browser)


@pytest.mark.parametrize("width", [1280, 1440])
def test_the_dashboard_fits_with_a_node_whose_labels_are_as_long_as_allowed(browser, width):
    """Label values of 63 characters, one word each: the nodes table wraps them rather
    than push its scheduling column off the page."""
    from nodes.services import node_set_labels

    browser.set_window_size(width, 1000)
    data = fleet()
    labels = {f"example.com/zone-{i}": f"eu-west-1-{i}-" + "x" * 50 for i in range(4)}
    node_set_labels(node=data["alive"], labels=labels, actor=None)
    log_in(browser, AdminFactory())

    wait_for(browser, ".tm-node-labels")
    assert no_horizontal_overflow(browser), page_widths(browser)


def page_widths(driver) -> list[int]:
    return driver.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.clientWidth];"
    )


@pytest.mark.parametrize("width", [1280, 1366, 1440])
def test_the_dashboard_and_activity_fit_with_nodes_in_maintenance_and_long_reasons(browser, width):
    """A node with a coming maintenance window that drains, nodes cordoned and draining
    with long reasons, a cancel request waiting, and an unbroken word (a ticket's URL)
    in a reason the activity feed shows: no page scrolls sideways."""
    from nodes.services import node_cordon, node_drain, node_maintenance_schedule
    from tasks.services import task_cancel

    browser.set_window_size(width, 1000)
    data = fleet()
    admin = AdminFactory(name="Dana Ops")
    now = timezone.now()
    reason = "Replace the failing disk in bay 3 and upgrade the RAID controller's firmware "
    node_maintenance_schedule(
        node_id=data["alive"].pk,
        starts_at=now + timedelta(days=3),
        ends_at=now + timedelta(days=3, hours=4),
        reason=reason * 3,
        drain=True,
        actor=admin,
    )
    ticket = "https://tickets.example.com/browse?id=INFRA_20417_replace_the_fan_in_rack_12_row_c"
    node_cordon(node_id=data["down"].pk, reason=f"{ticket} {reason}", actor=admin)
    node_drain(node_id=data["never"].pk, reason=reason * 2, actor=admin)
    task_cancel(task_id=data["tasks"]["in_progress"][0].pk)
    User.objects.filter(pk=data["alive"].pk).update(name="batch-runner-us-east-2b-spot-17")
    log_in(browser, admin)

    wide = []
    for path in ("/admin/", "/admin/activity/", f"/admin/node/{data['down'].pk}/"):
        browser.get(f"{browser.base_url}{path}")
        wait_for(browser, "#content")
        if not no_horizontal_overflow(browser):
            wide.append((path, page_widths(browser)))
    assert wide == []
    # The dashboard says it all, wrapped: the window, the drain, the reasons.
    browser.get(f"{browser.base_url}/admin/")
    cell = wait_for(browser, f'.tm-schedule[data-node="{data["alive"].pk}"]').text
    assert "maintenance" in cell and "(drain)" in cell
    assert (
        "by Dana Ops"
        in browser.find_element(
            By.CSS_SELECTOR, f'.tm-schedule[data-node="{data["down"].pk}"]'
        ).text
    )


def overlaps(driver, first, second) -> bool:
    return driver.execute_script(
        "var a = arguments[0].getBoundingClientRect(), b = arguments[1].getBoundingClientRect();"
        "return a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;",
        first,
        second,
    )


@pytest.mark.parametrize("width", [1280, 1440])
def test_a_task_pages_history_button_covers_nothing_of_its_actions(browser, width):
    """Django's object tools are pulled up beside the title; placed after the actions
    box they sat on its last line and hid the end of a waiting cancel request's words."""
    from tasks.services import task_cancel

    browser.set_window_size(width, 1000)
    running = TaskFactory(status=TaskStatus.IN_PROGRESS)
    task_cancel(task_id=running.pk, reason="not needed")
    log_in(browser, AdminFactory())

    browser.get(f"{browser.base_url}/admin/tasks/task/{running.pk}/change/")
    history = wait_for(browser, "ul.object-tools a.historylink")
    actions = browser.find_element(By.ID, "tm-task-actions")
    assert not overlaps(browser, history, actions)
    for line in actions.find_elements(By.CSS_SELECTOR, "p, form"):
        assert not overlaps(browser, history, line), line.text


@pytest.mark.parametrize("width", [1280, 1440])
def test_a_task_pages_progress_says_its_age_under_the_bar_not_indented(browser, width):
    """The age line of the progress field lines up with its bar and message: as a
    `help` div inside the aligned form it took Django's 170 px help indent."""
    from tasks.services import task_claim, task_report_progress

    browser.set_window_size(width, 1000)
    node = NodeFactory()
    TaskFactory(assigned_node=node)
    task = task_claim(node=node)
    task_report_progress(task_id=task.pk, node=node, percent=40, message="frame 40 of 100")
    log_in(browser, AdminFactory())

    browser.get(f"{browser.base_url}/admin/tasks/task/{task.pk}/change/")
    field = wait_for(browser, ".task-progress")
    bar = field.find_element(By.TAG_NAME, "progress")
    lines = field.find_elements(By.XPATH, "./div")
    assert lines[0].text == "frame 40 of 100" and lines[1].text.startswith("updated ")
    assert {round(line.rect["x"]) for line in lines} == {round(bar.rect["x"])}
