"""What API clients write, as the admin pages show it (headless Debian chromium, 1280 px).

A task's name (up to 255 characters) and a node's name (up to 150) come from API
clients: markup in them must stay text, and one long unbroken word must wrap rather
than push the page wider than the window (docs/security.md#what-api-clients-write).
"""

import pytest
from selenium.webdriver.common.by import By

from tests.browser.conftest import log_in, wait_for
from tests.factories import AdminFactory, NodeFactory, TaskFactory

pytestmark = pytest.mark.django_db(transaction=True)

# A payload that, run, leaves its mark in window.__xss; escaped, it is only text.
MARKUP = '<script>window.__xss=1</script>"><img src=x onerror="window.__xss=2">'


def test_long_unbroken_names_and_markup_stay_inside_the_window(browser):
    admin = AdminFactory()
    node = NodeFactory(name="N" * 150)
    task = TaskFactory(name="W" * 255, assigned_node=node)
    TaskFactory(name=MARKUP, assigned_node=node)
    log_in(browser, admin)

    for path in (
        f"/admin/tasks/task/{task.pk}/change/",
        f"/admin/tasks/taskhistory/?task__id__exact={task.pk}",
        f"/admin/node/{node.pk}/",
        f"/admin/accounts/user/{node.pk}/change/",
    ):
        browser.get(f"{browser.base_url}{path}")
        page = wait_for(browser, "html")

        assert page.get_property("scrollWidth") <= page.get_property("clientWidth"), path
        assert browser.execute_script("return window.__xss") is None, path
        assert not browser.find_elements(By.CSS_SELECTOR, "img[src=x]"), path
