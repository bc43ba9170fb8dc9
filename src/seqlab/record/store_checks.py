"""Whether MLflow can use a tracking store, checked in a second before MLflow opens it.

MLflow retries a store it cannot open ten times over 101 s, then fails with a bare OperationalError or
DatabaseError that names no config key; and it would add its tables to any SQLite file it is given. Here an
unusable store is one paragraph naming the option, the path and what was expected. The checks only read: they
create, change and lock nothing (a write check makes and removes a temporary file beside the database).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import tempfile
from pathlib import Path

from seqlab.errors import ConfigError
from seqlab.redaction import redact_uri

SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file
MLFLOW_TABLES = ("alembic_version", "experiments")  # either one: MLflow's schema (alembic_version since MLflow 1.0)
DATABASE_SCHEMES = ("postgresql", "mysql", "mssql")
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
DRIVER_EXAMPLES = "postgresql+psycopg2://..., mysql+pymysql://...: pip install psycopg2-binary or pymysql"


def check_store(uri: str, option: str = "tracking.uri", write: bool = True, timeout: float = 5.0) -> None:
    """Raise ConfigError if MLflow cannot use the store `uri` (given as `option`): a SQLite path it cannot create,
    read or (with `write`) write, a file that is not an MLflow SQLite store, a database URL that does not parse,
    lacks its driver or whose server does not answer. Other stores (http(s), databricks, ...) pass."""
    scheme = uri.partition(":")[0].partition("+")[0].lower()
    if scheme == "sqlite":
        _check_sqlite(uri, option, write)
    elif scheme in DATABASE_SCHEMES:
        _check_database_server(uri, option, scheme, timeout)


def _named(option: str, uri: str) -> str:
    return f"{option}={redact_uri(uri)!r}"


def _check_sqlite(uri: str, option: str, write: bool) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(uri)
    if not url.database or url.database == ":memory:" or url.query.get("uri") == "true":
        return  # in memory, or SQLite's own file: URI form (options the checks below would misread)
    path = Path(os.path.abspath(url.database))  # what SQLite opens (relative to the cwd, no ~ expansion)
    name = _named(option, uri)
    example = f"e.g. {option}=sqlite:///{path.parent / 'mlflow.db'}" if path.name != "mlflow.db" else ""
    if path.is_dir():
        inside = path / "mlflow.db"
        raise ConfigError(f"{name} names '{path}', which is a directory; expected an SQLite database file there (an "
                          f"MLflow store, or a new file MLflow can create), e.g. {option}=sqlite:///{inside}.")
    if not path.exists():
        if not write:
            raise ConfigError(f"There is no MLflow store at {name}: '{path}' does not exist; expected an existing "
                              f"store: run 'seqlab train' in this folder first, or give {option} (or "
                              "MLFLOW_TRACKING_URI) the store's path.")
        _check_new_database(path, name)
        return
    try:
        with open(path, "rb") as file:
            header = file.read(len(SQLITE_HEADER))
    except OSError as error:
        raise ConfigError(f"{name}: '{path}' cannot be read ({_reason(error)}); expected an MLflow store (an SQLite "
                          f"file) that this user can read{' and write' if write else ''}.") from None
    if not header:
        if not write:  # compare reads: MLflow would write its tables into it
            raise ConfigError(f"{name}: '{path}' is an empty file, not an MLflow store; expected an existing store: "
                              f"run 'seqlab train' with it first, or give {option} the store's path.")
        _check_writable(path, name)  # an empty file is a new SQLite database: MLflow makes its tables there
        return
    if header != SQLITE_HEADER:
        raise ConfigError(f"{name}: '{path}' is not an SQLite database (it does not start with SQLite's header); "
                          f"expected an MLflow store (an SQLite file) or a path where a new one can be created, "
                          f"{example or 'e.g. sqlite:///mlflow.db'}. The file was left as it is.")
    tables = _tables(path, name)
    if not any(table in tables for table in MLFLOW_TABLES):
        if tables or not write:  # compare reads: MLflow would write its tables into an empty database
            held = f"its tables: {', '.join(tables[:5])}{', ...' if len(tables) > 5 else ''}" if tables else "no tables"
            raise ConfigError(f"{name}: '{path}' is an SQLite database but not an MLflow store ({held}); expected an "
                              f"MLflow store (tables {' and '.join(MLFLOW_TABLES)}) or a path where a new one can be "
                              f"created, {example or 'e.g. sqlite:///mlflow.db'}. The file was left as it is.")
    if write:
        _check_writable(path, name)


def _tables(path: Path, name: str) -> list[str]:
    try:  # read-only: the check never creates, changes or locks the database for writing
        connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=10)
        try:
            return [row[0] for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        finally:
            connection.close()
    except sqlite3.Error as error:
        raise ConfigError(f"{name}: '{path}' cannot be read as an SQLite database ({error}); expected an MLflow "
                          "store (an intact SQLite file). The file was left as it is.") from None


def _check_new_database(path: Path, name: str) -> None:
    """SQLite creates the file, and MLflow its folder: the nearest existing folder above it must be writable."""
    base = path.parent
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise ConfigError(f"{name}: the database '{path}' cannot be created: '{base}' is a file, not a folder; "
                          "expected a path in a folder this user can write to (missing folders are created).")
    problem = _unwritable(base)
    if problem:
        what = "the database" if base == path.parent else f"the folder '{path.parent}' for the database"
        raise ConfigError(f"{name}: {what} '{path}' cannot be created: cannot write to '{base}' ({problem}); "
                          "expected a path in a folder this user can write to (missing folders are created).")


def _check_writable(path: Path, name: str) -> None:
    """MLflow writes the database, and SQLite its journal beside it."""
    try:
        with open(path, "r+b"):  # opened for writing, nothing written
            pass
        problem = _unwritable(path.parent)
    except OSError as error:
        problem = _reason(error)
    if problem:
        raise ConfigError(f"{name}: cannot write to the store '{path}' ({problem}); expected an MLflow store that "
                          "this user can write to, with its folder (SQLite writes a journal beside it): give a "
                          "writable path, or copy the store to one.")


def _unwritable(folder: Path) -> str | None:
    """Why no file can be made in `folder` (a read-only mount, permissions), or None; os.access trusts the mode
    bits, which a read-only file system or root's rights make wrong, so a file is made and removed."""
    try:
        descriptor, probe = tempfile.mkstemp(prefix=".seqlab-write-check-", dir=folder)
    except OSError as error:
        return _reason(error)
    os.close(descriptor)
    os.unlink(probe)
    return None


def _reason(error: OSError) -> str:
    import errno

    if error.errno == errno.EROFS:
        return "read-only file system"
    if error.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return error.strerror or type(error).__name__


def _check_database_server(uri: str, option: str, scheme: str, timeout: float) -> None:
    from sqlalchemy.engine import make_url

    name = _named(option, uri)
    try:
        url = make_url(uri)
        host = url.host or ""
        if host and not any(f"@{shown}" in redact_uri(uri) for shown in (host, f"[{host}]")):
            # SQLAlchemy ends the password at its first "@" or "/": it would dial part of the password as the host
            raise ValueError(host)
    except Exception:  # SQLAlchemy's ArgumentError and ValueError (a bad port): its text would show the URL
        raise ConfigError(f"{name} is not a database URL SQLAlchemy can read; expected "
                          f"{scheme}://USER:PASSWORD@HOST:PORT/DATABASE, with any '/', '@', ':' or '%' in the user "
                          "or password percent-encoded (%2F, %40, %3A, %25).") from None
    try:
        url.get_dialect().import_dbapi()
    except ImportError as error:
        raise ConfigError(f"Cannot use the MLflow store {name}: its database driver is not installed ({error}); "
                          f"expected an installed driver: pip install it, or name one in the URI "
                          f"({DRIVER_EXAMPLES}).") from None
    except Exception:  # an unknown dialect: MLflow's own error says which are known
        return
    if not url.host or url.host.startswith("/"):
        return  # a local socket: nothing to dial here
    port = url.port or DEFAULT_PORTS[scheme]
    try:
        socket.create_connection((url.host, port), timeout=timeout).close()
    except OSError as error:
        raise ConfigError(f"Cannot reach the database server of {name} at {url.host}:{port} ({_reason(error)}); "
                          f"expected a running {scheme} server there: start it"
                          f"{' (make server DB=postgres starts one)' if scheme == 'postgresql' else ''}, or point "
                          f"{option} at a local store such as sqlite:///mlflow.db.") from None
