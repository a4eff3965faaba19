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
