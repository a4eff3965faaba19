"""An operator drains a node from its page in a real browser: the confirmation page,
then the state and the event on the page (headless Debian chromium); cancels a
maintenance window and broadcasts a task, each behind its confirmation page."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone
from selenium.webdriver.common.by import By

from accounts.models import User
from nodes.models import Cordon, MaintenanceWindow
from tasks.models import Task
from tests.browser.conftest import log_in, text_of, wait_for
from tests.browser.test_dashboard_browser import live_refreshes, wait_refresh
from tests.factories import AdminFactory, NodeFactory, TaskFactory

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_operator_drains_a_node_then_uncordons_it(browser):
    admin, node, other = AdminFactory(), NodeFactory(name="rack-7"), NodeFactory()
    User.objects.filter(pk__in=[node.pk, other.pk]).update(last_seen=timezone.now())
    task = TaskFactory(assigned_node=node)
    log_in(browser, admin)

    browser.get(f"{browser.base_url}/admin/node/{node.pk}/")
    wait_for(browser, "#tm-drain #id_drain-reason").send_keys("kernel upgrade")
    browser.find_element(By.CSS_SELECTOR, "#tm-drain input[type=submit]").click()
    wait_for(browser, "#tm-drain-confirm input[type=submit]").click()

    assert text_of(browser, "#tm-node-state") == "draining"
    assert "kernel upgrade" in text_of(browser, "#tm-node-events")
    assert Cordon.objects.get(node=node).by == admin
    assert Task.objects.get(pk=task.pk).assigned_node_id == other.pk

    wait_for(browser, "#tm-uncordon #id_uncordon-reason").send_keys("done")
    browser.find_element(By.CSS_SELECTOR, "#tm-uncordon input[type=submit]").click()
    wait_for(browser, ".messagelist")
    assert text_of(browser, "#tm-node-state") == "schedulable"


def test_a_reason_being_typed_survives_the_pages_live_refresh(browser):
    # The page refreshes its figures every few seconds (live.js): the forms stay as typed.
    node = NodeFactory(name="rack-9")
    log_in(browser, AdminFactory())
    browser.get(f"{browser.base_url}/admin/node/{node.pk}/")
    wait_for(browser, "#tm-cordon #id_cordon-reason").send_keys("fan noise")

    wait_refresh(browser, live_refreshes(browser))

    assert browser.find_element(By.ID, "id_cordon-reason").get_attribute("value") == "fan noise"
    browser.find_element(By.CSS_SELECTOR, "#tm-cordon input[type=submit]").click()
    assert text_of(browser, "#tm-node-state") == "cordoned"
    assert Cordon.objects.get(node=node).reason == "fan noise"


def test_an_operator_cancels_a_maintenance_window_after_its_confirmation(browser):
    node = NodeFactory(name="rack-8")
    starts = timezone.now() + timedelta(hours=1)
    MaintenanceWindow.objects.create(
        node=node, starts_at=starts, ends_at=starts + timedelta(hours=1), reason="rack move"
    )
    log_in(browser, AdminFactory())

    browser.get(f"{browser.base_url}/admin/node/{node.pk}/")
    wait_for(browser, ".tm-cancel-window input[type=submit]").click()

    assert "(rack move) is deleted" in wait_for(browser, ".tm-confirm-changes").text
    assert MaintenanceWindow.objects.exists()
    browser.find_element(By.ID, "tm-confirm-submit").click()
    assert "Cancelled the maintenance window" in wait_for(browser, ".messagelist").text
    assert not MaintenanceWindow.objects.exists()


def test_a_broadcast_asks_first_and_its_way_back_keeps_what_was_typed(browser):
    NodeFactory(email="a@example.com")
    NodeFactory(email="b@example.com")
    log_in(browser, AdminFactory())
    payload = '{\n  "packages": ["openssl"]\n}'

    browser.get(f"{browser.base_url}/admin/tasks/task/broadcast/")
    for field, value in (
        ("name", "upgrade"),
        ("details", "apt upgrade"),
        ("locked_at", "2099-07-01 09:30"),
        ("payload", payload),
    ):
        wait_for(browser, f"#id_{field}").send_keys(value)
    browser.find_element(By.CSS_SELECTOR, "#tm-broadcast input[type=submit]").click()

    changes = wait_for(browser, ".tm-confirm-changes").text
    assert "2 task(s) are created now, one per node: a@example.com, b@example.com." in changes
    browser.find_element(By.ID, "tm-confirm-back").click()
    kept = wait_for(browser, "#id_payload").get_attribute("value")
    assert json.loads(kept) == json.loads(payload)  # pretty-printed again, as a JSON box is
    assert not Task.objects.exists()

    browser.find_element(By.CSS_SELECTOR, "#tm-broadcast input[type=submit]").click()
    wait_for(browser, "#tm-confirm-submit").click()
    assert "Broadcast 2 task(s)" in wait_for(browser, ".messagelist").text
    assert [task.payload for task in Task.objects.all()] == [{"packages": ["openssl"]}] * 2
