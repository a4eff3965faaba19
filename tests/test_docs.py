"""The API docs (Swagger UI, ReDoc) come from our own static files and render offline.

Both servers a user meets are real processes here: `make run`'s runserver
(DEBUG on, static files from the apps) and `make serve`'s gunicorn (DEBUG off,
collectstatic, whitenoise). Chromium is told that no host but 127.0.0.1 exists.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.ports import free_port

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PAGES = ["/api/docs/", "/api/redoc/"]
ASSET = re.compile(r"""(?:src|href)=["']([^"']+)["']""")
ANY_URL = re.compile(r"""(?:https?:)?//[^\s"'<>)]+""")


def fetch(url: str):
    """(status, headers, body) of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


class Server:
    """A server process on a free port, its output kept in a log file."""

    def __init__(self, command: list[str], env: dict, log: Path, port: int):
        self.origin = f"http://127.0.0.1:{port}"
        self.log = log
        with log.open("w") as out:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 40
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server did not start:\n{log.read_text()}")
            time.sleep(0.2)

    def answers(self) -> bool:
        try:
            return fetch(f"{self.origin}/healthz")[0] == 200
        except OSError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def environment(tmp: Path, debug: bool) -> dict:
    # The project's own settings, as `make run`/`make serve` use them, not the suite's.
    unset = ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "CACHE_URL")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    return {
        **env,
        "DEBUG": "true" if debug else "false",
        "SECRET_KEY": "docs-test-key-not-secret-but-long-enough-for-hs256",
        "DB_ENGINE": "sqlite",
        "DB_NAME": str(tmp / "db.sqlite3"),
        "STATIC_ROOT": str(tmp / "static"),
        "SECURE_HSTS_SECONDS": "0",
    }


def manage(env: dict, *args: str) -> None:
    subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True
    )


@pytest.fixture(scope="module", params=["runserver", "gunicorn"])
def server(request, tmp_path_factory):
    """`make run` (runserver, DEBUG on) or `make serve` (gunicorn, DEBUG off, collectstatic)."""
    tmp = tmp_path_factory.mktemp(request.param)
    port = free_port()
    if request.param == "runserver":
        env = environment(tmp, debug=True)
        manage(env, "migrate", "--noinput", "-v", "0")
        command = [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]
    else:
        env = environment(tmp, debug=False)
        manage(env, "migrate", "--noinput", "-v", "0")
        manage(env, "collectstatic", "--noinput", "-v", "0")
        env |= {"GUNICORN_BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "1"}
        command = [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py"]
    running = Server(command, env, tmp / "server.log", port)
    yield running
    running.stop()


@pytest.mark.parametrize("page", PAGES)
def test_a_docs_page_names_no_host_but_the_server_itself(server, page):
    status, headers, body = fetch(server.origin + page)

    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert ANY_URL.findall(body.decode()) == []
    assert "default-src 'self'" in headers["Content-Security-Policy"]


@pytest.mark.parametrize("page", PAGES)
def test_every_asset_a_docs_page_references_is_served(server, page):
    html = fetch(server.origin + page)[2].decode()
    assets = ASSET.findall(html)
    assert any(asset.endswith(".js") for asset in assets), html

    for asset in assets:
        assert asset.startswith("/static/drf_spectacular_sidecar/"), asset
        status, headers, body = fetch(server.origin + asset)
        assert status == 200, asset
        content_type = headers["Content-Type"]
        assert content_type.split(";")[0] in {
            "text/javascript",
            "application/javascript",
            "text/css",
            "image/png",
        }, (asset, content_type)
        assert len(body) > 100


# --- In a real browser, with every other host unreachable ------------------------

needs_chromium = pytest.mark.skipif(
    not (shutil.which("chromium") and shutil.which("chromedriver")),
    reason="needs Debian's chromium and chromium-driver",
)


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        # The network unplugged: every name but 127.0.0.1 fails to resolve.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def requests_sent(driver) -> list[str]:
    """URLs the page requested, less those its Content-Security-Policy kept in the browser."""
    sent, blocked = {}, set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        method, params = message["method"], message["params"]
        if method == "Network.requestWillBeSent":
            sent[params["requestId"]] = params["request"]["url"]
        elif method == "Network.loadingFailed" and params.get("blockedReason") == "csp":
            blocked.add(params["requestId"])
    return [url for request_id, url in sent.items() if request_id not in blocked]


@needs_chromium
@pytest.mark.parametrize(
    ("page", "title_selector"),
    [("/api/docs/", ".swagger-ui .info .title"), ("/api/redoc/", "h1")],
)
def test_a_docs_page_renders_the_api_in_a_browser_without_internet(
    server, browser, page, title_selector
):
    browser.get_log("performance")  # drop the previous page's requests
    browser.get(server.origin + page)

    title = WebDriverWait(browser, 30).until(
        expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, title_selector))
    )
    assert "taskmgmt API" in title.text
    # The operations were read from the schema: one of them is on the page.
    WebDriverWait(browser, 30).until(lambda driver: "/api/tasks/shift-status" in driver.page_source)
    urls = requests_sent(browser)
    assert f"{server.origin}/api/schema/" in urls
    outside = [url for url in urls if not url.startswith((server.origin, "data:", "blob:"))]
    assert outside == []
