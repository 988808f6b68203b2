"""PyMySQL through Sluice: plain, TLS and caching_sha2_password; queries, types, errors,
transactions, COM_INIT_DB and COM_PING. Exits non-zero with a message on the first failure.

usage: pymysql_check.py PORT [--ssl]
"""
import decimal
import ssl
import sys

import pymysql


def main() -> None:
    port = int(sys.argv[1])
    use_ssl = "--ssl" in sys.argv
    kwargs = dict(host="127.0.0.1", port=port, user="app", password="app-secret", database="app")
    if use_ssl:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        kwargs["ssl"] = ctx
    conn = pymysql.connect(**kwargs)
    cur = conn.cursor()
    if use_ssl:
        assert conn._sock.version() is not None, "not a TLS socket"

    cur.execute("SELECT 1, 'héllo ✓', NULL, 1.50, CAST(1.5 AS DOUBLE), -7")
    row = cur.fetchone()
    assert row == (1, "héllo ✓", None, decimal.Decimal("1.50"), 1.5, -7), row

    cur.execute("DROP TABLE IF EXISTS py_t")
    cur.execute("CREATE TABLE py_t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20), b BLOB)")
    cur.executemany("INSERT INTO py_t (v, b) VALUES (%s, %s)", [("a", b"\x00\x01"), ("b", None)])
    assert cur.rowcount == 2, cur.rowcount
    cur.execute("INSERT INTO py_t (v) VALUES (%s)", ("c",))
    last = cur.lastrowid
    cur.execute("SELECT LAST_INSERT_ID()")
    assert cur.fetchone()[0] == last

    conn.begin()
    cur.execute("UPDATE py_t SET v = 'x' WHERE id = %s", (last,))
    conn.rollback()
    cur.execute("SELECT v FROM py_t WHERE id = %s", (last,))
    assert cur.fetchone()[0] == "c", "rollback lost"

    try:
        cur.execute("SELECT * FROM no_such_table_py")
        raise AssertionError("expected an error")
    except pymysql.err.ProgrammingError as e:
        assert e.args[0] == 1146, e.args

    cur.execute("SELECT b FROM py_t ORDER BY id")
    assert [r[0] for r in cur.fetchall()] == [b"\x00\x01", None, None]

    conn.select_db("app")  # COM_INIT_DB
    conn.ping(reconnect=False)  # COM_PING
    cur.execute("SELECT DATABASE()")
    assert cur.fetchone()[0] == "app"
    conn.close()
    print("pymysql ok", "ssl" if use_ssl else "plain")


if __name__ == "__main__":
    main()
