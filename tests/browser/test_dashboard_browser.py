"""The operator's path through the admin in a real browser: log in, read the dashboard,
follow a number to its tasks, open a node, reassign its work and read the history.

DASHBOARD_SCREENSHOT=docs/dashboard.png also saves the picture of the dashboard the README shows.
"""

import os
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tasks.models import Task, TaskStatus
from tests.browser.conftest import ROOT, log_in, wait_for
from tests.factories import AdminFactory, NodeFactory, TaskFactory, fleet

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


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
        target.parent.mkdir(parents=True, exist_ok=True)
        browser.set_window_size(1280, 1400)
        browser.find_element(By.ID, "content-main").screenshot(str(target))
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


def test_reassign_a_nodes_two_open_tasks_from_its_page_and_read_their_history(browser):
    source, target = NodeFactory(name="Source node"), NodeFactory(name="Target node")
    tasks = TaskFactory.create_batch(2, assigned_node=source)
    TaskFactory(assigned_node=source, status=TaskStatus.COMPLETED)
    log_in(browser, AdminFactory())

    browser.find_element(By.LINK_TEXT, "Source node").click()
    wait_for(browser, "#tm-node-actions")
    assert browser.find_element(By.ID, "tm-node-liveness-state").text == "Never seen"
    Select(browser.find_element(By.ID, "id_node")).select_by_visible_text(str(target))
    browser.find_element(By.CSS_SELECTOR, "#tm-reassign input[type=submit]").click()
    message = wait_for(browser, "ul.messagelist li").text
    assert message == f"Reassigned 2 open task(s) to {target}."
    assert {
        task.assigned_node_id for task in Task.objects.filter(pk__in=[t.pk for t in tasks])
    } == {target.pk}

    for task in tasks:
        browser.get(f"{browser.base_url}/admin/tasks/task/{task.pk}/change/")
        page = wait_for(browser, "#content").text
        assert "Assignee change" in page
        assert str(target) in page and str(source) in page
