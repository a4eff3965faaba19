"""The command line: a `--work` that names no function is refused before any request."""

import pytest
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
    assert "--server SERVER or TASKMGMT_URL (default http://127.0.0.1:8000)" in said
