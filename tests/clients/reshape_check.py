"""MariaDB Connector/Python's prepared cursor across changes of what statements return: a
procedure re-defined with other result sets and columns, a table altered. Prints what each
execution returned (column names, rows, per result set), to compare with a direct run.

usage: reshape_check.py PORT   (run with the client suites' virtualenv python)
"""
import sys

import mariadb


def main() -> None:
    conn = mariadb.connect(host="127.0.0.1", port=int(sys.argv[1]), user="app",
                           password="app-secret", database="app")
    plain = conn.cursor()
    calls = conn.cursor(prepared=True)
    selects = conn.cursor(prepared=True)

    def sets(prepared, sql, params):
        prepared.execute(sql, params)
        out = []
        while True:
            if prepared.description:
                out.append(([d[0] for d in prepared.description], prepared.fetchall()))
            if not prepared.nextset():
                return out

    plain.execute("CREATE OR REPLACE TABLE app.reshape_t (a INT)")
    plain.execute("INSERT INTO app.reshape_t VALUES (1)")
    bodies = [
        "SELECT n AS a",
        "SELECT 'x' AS b, 2.5 AS c, n; SELECT n + 1; SELECT 'three' AS z, NULL",
        "UPDATE app.reshape_t SET a = a + n",
        "SELECT n, n, n, n; SELECT CAST(n AS CHAR) AS s",
    ]
    for i, body in enumerate(bodies):
        plain.execute(f"CREATE OR REPLACE PROCEDURE app.reshape_p(IN n INT) BEGIN {body}; END")
        conn.commit()
        print("call", i, sets(calls, "CALL app.reshape_p(?)", (i,)))
    for change in [
        None,
        "ALTER TABLE app.reshape_t ADD COLUMN b VARCHAR(10) DEFAULT 'bee', ADD COLUMN c DOUBLE DEFAULT 1.5",
        "ALTER TABLE app.reshape_t DROP COLUMN b",
        "ALTER TABLE app.reshape_t MODIFY a VARCHAR(20)",
    ]:
        if change:
            plain.execute(change)
        conn.commit()
        print("select", change, sets(selects, "SELECT * FROM app.reshape_t WHERE a > ?", (0,)))
    conn.close()


if __name__ == "__main__":
    main()
