"""PyMySQL's LOAD DATA LOCAL INFILE (local_infile=True) through Sluice: loads FILE into TABLE
and prints the affected rows. Exits non-zero with a message on failure.

usage: load_data_check.py PORT FILE TABLE
"""
import sys

import pymysql


def main() -> None:
    port, path, table = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    conn = pymysql.connect(
        host="127.0.0.1",
        port=port,
        user="app",
        password="app-secret",
        database="app",
        local_infile=True,
        autocommit=True,
    )
    cur = conn.cursor()
    affected = cur.execute(f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE {table}")
    print(affected)
    conn.close()


if __name__ == "__main__":
    main()
