"""A Python driver with its defaults (autocommit off) through Sluice with reads split to
replicas: read-then-write in one implicit transaction runs on the primary and works; a declared
read-only transaction is served by a replica; autocommit reads leave the primary.

usage: transactions_check.py PORT PRIMARY_PORT pymysql|mysql.connector|mysql.connector-prepared
Exits non-zero with a message on the first failure.
"""
import sys


def connect(driver: str, port: int):
    kwargs = dict(host="127.0.0.1", port=port, user="app", password="app-secret", database="app")
    if driver == "pymysql":
        import pymysql

        return pymysql.connect(**kwargs), {}
    import mysql.connector

    conn = mysql.connector.connect(use_pure=True, **kwargs)
    return conn, {"prepared": driver.endswith("-prepared")}


def main() -> None:
    port, primary, driver = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    conn, cursor_args = connect(driver, port)
    pymysql_conn = driver == "pymysql"
    autocommit = conn.get_autocommit() if pymysql_conn else conn.autocommit
    assert not autocommit, f"{driver}: expected autocommit off by default"
    cur = conn.cursor(**cursor_args)

    def one(sql, args=None):
        cur.execute(sql, args) if args is not None else cur.execute(sql)
        rows = cur.fetchall()
        return rows[0][0] if rows else None

    cur.execute("CREATE TABLE IF NOT EXISTS py_tx (id INT PRIMARY KEY, v VARCHAR(10))")
    cur.execute("INSERT IGNORE INTO py_tx VALUES (1, 'a')")
    conn.commit()
    for _ in range(3):
        assert one("SELECT COUNT(*) FROM py_tx WHERE id = %s", (1,)) == 1
        got = one("SELECT @@port")
        assert got == primary, f"{driver}: the implicit transaction ran on {got}, not the primary"
        cur.execute("UPDATE py_tx SET v = %s WHERE id = %s", ("q", 1))
        conn.commit()

    # A read-only transaction may be served by a replica: on a connection of its own, since a
    # replica serves this one's reads only once it has its writes (read-your-writes).
    # (mysql.connector's start_transaction(readonly=True) refuses the "5.5.5-" version prefix
    # MariaDB 10 sends, direct too; and the statement cannot be prepared: plain text.)
    reader, _ = connect(driver, port)
    rcur = reader.cursor()
    rcur.execute("START TRANSACTION READ ONLY")
    rcur.execute("SELECT @@port")
    got = rcur.fetchall()[0][0]
    assert got != primary, f"{driver}: a read-only transaction stayed on the primary"
    reader.commit()
    reader.close()

    conn.close()
    # Autocommit reads of a session that has not written leave the primary.
    conn, cursor_args = connect(driver, port)
    if pymysql_conn:
        conn.autocommit(True)
    else:
        conn.autocommit = True
    cur = conn.cursor(**cursor_args)
    seen = {one("SELECT @@port") for _ in range(4)}
    assert primary not in seen, f"{driver}: autocommit reads went to the primary: {seen}"
    conn.close()
    print(f"{driver}: ok")


if __name__ == "__main__":
    main()
