"""deploy/haproxy.cfg's own rules, with a stand-in host behind it on this machine's
loopback: what the balancer answers itself, never passing it to a host.

Marked `cluster` (it needs Debian's haproxy, which `make test-cluster` installs), but
no namespaces: it runs in seconds.
"""

import http.client
import json
import re
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from taskmgmt.renderers import JSON_CONTENT_TYPE
from tests.cluster.harness import ROOT, wait_for
from tests.ports import free_port

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.process,
    pytest.mark.skipif(not shutil.which("haproxy"), reason="needs haproxy (make test-cluster)"),
]

# What a host with no metrics configured answers for /metrics (taskmgmt/metrics.py).
NOT_FOUND = {"title": "Not Found", "message": "No such page or object."}


class Host(BaseHTTPRequestHandler):
    """Answers 200 to everything (its /healthz too) and notes the paths of the requests
    the test sent (the balancer's own health checks carry no Authorization)."""

    seen: list = []

    def do_GET(self):
        if self.headers.get("Authorization"):
            self.seen.append(self.path)
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def balancer(tmp_path):
    host = ThreadingHTTPServer(("127.0.0.1", 0), Host)
    threading.Thread(target=host.serve_forever, daemon=True).start()
    port = free_port()
    shipped = (ROOT / "deploy" / "haproxy.cfg").read_text()
    config = shipped.replace("    bind :80\n", f"    bind 127.0.0.1:{port}\n")
    config, count = re.subn(
        r"(    server app\d .*\n)+", f"    server app1 127.0.0.1:{host.server_port} check\n", config
    )
    assert count == 1 and f":{port}" in config
    (tmp_path / "global.cfg").write_text("global\n    log stderr format raw local0 notice\n")
    (tmp_path / "taskmgmt.cfg").write_text(config)
    files = ["-f", str(tmp_path / "global.cfg"), "-f", str(tmp_path / "taskmgmt.cfg")]
    process = subprocess.Popen(["haproxy", "-db", *files], stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: get(port, "/healthz")[0] == 200, 20, "haproxy did not pass a request")
        Host.seen.clear()
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)
        host.shutdown()


def get(port: int, path: str):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path, headers={"Authorization": "Bearer a-metrics-token"})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    except OSError:
        return 0, None, b""
    finally:
        connection.close()


@pytest.mark.parametrize("path", ["/metrics", "/metrics/", "/metrics?x=1", "/%6detrics"])
def test_the_balancer_answers_metrics_itself_and_never_passes_them_to_a_host(balancer, path):
    # Through the balancer a host saw the balancer's address: with
    # METRICS_ALLOWED_NETWORKS naming the hosts' network, anyone could read /metrics.
    status, content_type, body = get(balancer, path)

    assert (status, content_type) == (404, JSON_CONTENT_TYPE)
    assert json.loads(body) == NOT_FOUND
    assert Host.seen == []


def test_the_balancer_passes_the_api_and_health_checks_on(balancer):
    assert get(balancer, "/api/tasks/all")[0] == 200
    assert get(balancer, "/healthz")[0] == 200
    assert Host.seen == ["/api/tasks/all", "/healthz"]
