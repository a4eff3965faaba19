"""The command line: a `--work` that names no function is refused before any request."""

import pytest
from taskmgmt_worker import cli
from taskmgmt_worker.cli import main

LOGIN = ["--server", "http://127.0.0.1:9", "--email", "node@example.com", "--password", "x"]


@pytest.mark.parametrize(
    "spec, says",
    [
        ("json", "name it as module:function"),
        (":run", "name it as module:function"),
        ("json:", "name it as module:function"),
        ("json:no_such_function", "has no function 'no_such_function'"),
        ("json:__doc__", "has no function '__doc__'"),
    ],
)
def test_a_work_spec_that_names_no_function_is_a_usage_error(spec, says, capsys):
    with pytest.raises(SystemExit) as exit:
        main([*LOGIN, "--work", spec])

    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert says in err
    assert "Traceback" not in err


def test_the_help_names_the_servers_variable_and_default(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--help"])

    assert exit.value.code == 0
    said = " ".join(capsys.readouterr().out.split())
    server = "--server SERVER the server's URL, or TASKMGMT_URL (default http://127.0.0.1:8000)"
    assert server in said


@pytest.mark.parametrize("server", ["127.0.0.1:8000", "localhost:8000", "ftp://x", "http://"])
def test_a_server_that_is_no_http_url_is_a_usage_error(server, capsys, monkeypatch):
    # Else urllib's "unknown url type" was retried as a lost connection, for ever.
    monkeypatch.setattr(cli, "run_worker", lambda *a, **k: pytest.fail("the worker started"))
    with pytest.raises(SystemExit) as exit:
        main(["--server", server, "--email", "node@example.com", "--password", "x"])

    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "http://" in err
    assert "Traceback" not in err


def test_a_work_module_that_does_not_exist_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit:
        main([*LOGIN, "--work", "no_such_module_xyz:run"])

    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "no module named 'no_such_module_xyz'" in err.lower()
    assert "Traceback" not in err


def test_a_number_from_the_environment_that_is_no_number_is_a_usage_error(monkeypatch, capsys):
    # It was a ValueError's traceback, even for --help.
    monkeypatch.setenv("TASKMGMT_IDLE_SECONDS", "two")
    with pytest.raises(SystemExit) as exit:
        main(LOGIN)

    assert exit.value.code == 2
    assert "--idle-seconds: invalid float value: 'two'" in capsys.readouterr().err
