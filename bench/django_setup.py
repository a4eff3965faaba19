"""What every in-process benchmark does first: a database of its own, Django set up on
it, migrated. Never the dev or test database: a name of the benchmark's on the MariaDB
server of DATABASE_URL when that is a MySQL/MariaDB URL, else a SQLite file in a
temporary folder."""

import os
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent


def bench_database_url(workdir: Path, name: str) -> str:
    """DATABASE_URL's server with the database `name`, or `workdir`/`name`.sqlite3."""
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith("mysql"):
        return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))
    return f"sqlite:///{workdir / f'{name}.sqlite3'}"


def setup_django(database_url: str, **settings: str) -> None:
    """Django on `database_url` (created if missing), migrated; `settings` are set in the
    environment before Django reads it, over the benchmark defaults."""
    os.environ.update(
        DATABASE_URL=database_url,
        DJANGO_SETTINGS_MODULE="taskmgmt.settings",
        SECRET_KEY=os.environ.get("SECRET_KEY") or "bench-only-not-secret",
        DEBUG="false",
        LOG_LEVEL="WARNING",
    )
    os.environ.update(settings)
    if database_url.startswith("mysql"):
        create_mysql_database(database_url)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def create_mysql_database(database_url: str) -> None:
    import MySQLdb

    parts = urlsplit(database_url)
    server = MySQLdb.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
    )
    name = parts.path.strip("/")
    server.cursor().execute(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4")
    server.close()
