"""CI: fail at once, saying why, when the PostgreSQL server the tests need does not answer."""

import os
import sys

import psycopg

dsn = os.environ["QBO_EVENTS_TEST_POSTGRES"]
try:
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        conn.execute("SELECT 1")
except psycopg.Error as exc:
    sys.exit(
        f"PostgreSQL at {dsn} does not answer: {exc}\n"
        "tests/pg need it: start the server or point QBO_EVENTS_TEST_POSTGRES at one"
    )
print(f"PostgreSQL at {dsn} answers")
