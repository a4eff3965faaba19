"""A gunicorn worker does not load what only a development install has.

DRF imports requests, pygments and markdown whenever they are installed; the test
tools bring them into the development venv, a production install (requirements.txt)
has none of them. gunicorn.conf.py keeps them out of its workers, so a server started
from either venv holds the same memory (docs/performance.md).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ports import free_port
from tests.test_faults import wait_until
from tests.test_gunicorn_reload import answers, fetch, gunicorn_env, start_gunicorn

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.process

# The project's application, and a path that says which of these modules the worker
# holds once Django has loaded everything a request needs.
PROBE = """
import sys

from taskmgmt.wsgi import application as django_application

NAMES = ("requests", "pygments", "markdown", "rest_framework.compat", "rest_framework.views")


def application(environ, start_response):
    if environ["PATH_INFO"] == "/probe-modules":
        import json

        loaded = {name: sys.modules.get(name) is not None for name in NAMES}
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(loaded).encode()]
    return django_application(environ, start_response)
"""


def test_a_worker_holds_none_of_drf_s_optional_imports_yet_serves_everything(tmp_path):
    (tmp_path / "modules_probe.py").write_text(PROBE)
    port = free_port()
    env = gunicorn_env(tmp_path, port)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    log = (tmp_path / "gunicorn.log").open("w")
    server = start_gunicorn(env, "modules_probe:application", log)
    try:
        wait_until(lambda: answers(port, "/healthz"), 30, "gunicorn did not answer")
        # The schema is the widest import the API has (drf-spectacular walks every view).
        assert fetch(port, "/api/schema/")[0] == 200
        status, body = fetch(port, "/probe-modules")

        assert status == 200
        assert json.loads(body) == {
            "requests": False,
            "pygments": False,
            "markdown": False,
            "rest_framework.compat": True,
            "rest_framework.views": True,
        }
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_the_development_venv_has_them_so_the_test_above_is_not_vacuous():
    found = subprocess.run(
        [sys.executable, "-c", "import requests, pygments; print('ok')"],
        capture_output=True,
        text=True,
    )

    assert found.stdout.strip() == "ok", found.stderr
