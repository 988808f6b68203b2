#!/usr/bin/env python3
"""Runs a third-party client test suite twice, directly against the primary and through Sluice,
and compares the outcome of every test.

    suites.py SUITE --direct PORT --gateway PORT --replicas PORT,PORT [--database NAME]

SUITE is one of `sqlalchemy`, `mysqlclient`, `mariadb-connector` (see SUITES). The suites and
their virtualenv are installed by `scripts/suites-install` into $SUITES_DIR (default
~/.cache/sluice/suites). Before each run the suite's databases are dropped and created again on
the primary (as `admin`) and the replicas are waited for, so both runs start from the same state.

A test whose outcome differs must be listed in `differences.toml` beside this file with the reason;
a listed difference that no longer shows fails too, so the list stays true. Exit 0 when the outcome
sets match up to the list.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pymysql

HERE = Path(__file__).resolve().parent
SUITES_DIR = Path(os.environ.get("SUITES_DIR", Path.home() / ".cache/sluice/suites"))
PYTHON = SUITES_DIR / "venv/bin/python"
USER, PASSWORD = "app", "app-secret"


def sqlalchemy(port, db, out):
    return (
        SUITES_DIR / "sqlalchemy-2.1.9",
        ["test/dialect/test_suite.py", "test/dialect/mysql",
         "--dburi", f"mysql+pymysql://{USER}:{PASSWORD}@127.0.0.1:{port}/{db}"],
        {},
        ["test_schema", "test_schema_2"],
    )


def mysqlclient(port, db, out):
    cnf = out.with_suffix(".cnf")
    cnf.write_text(
        "[MySQLdb-tests]\nhost = 127.0.0.1\n"
        f"port = {port}\nuser = {USER}\npassword = {PASSWORD}\ndatabase = {db}\n"
        "default-character-set = utf8mb4\n"
    )
    return (SUITES_DIR / "mysqlclient-2.3.2", ["tests"], {"TESTDB": str(cnf)}, [])


def mariadb_connector(port, db, out):
    env = {
        "TEST_DB_USER": USER, "TEST_DB_PASSWORD": PASSWORD, "TEST_DB_HOST": "127.0.0.1",
        "TEST_DB_PORT": str(port), "TEST_DB_DATABASE": db,
    }
    return (SUITES_DIR / "mariadb-1.1.14/testing", ["test"], env, [])


SUITES = {"sqlalchemy": sqlalchemy, "mysqlclient": mysqlclient, "mariadb-connector": mariadb_connector}


def admin(port):
    return pymysql.connect(host="127.0.0.1", port=port, user="admin", password="admin-secret",
                           autocommit=True)


def reset(primary, replicas, databases):
    """Fresh databases on the primary, granted to the suite's user, replicated everywhere."""
    with admin(primary) as c, c.cursor() as cur:
        for d in databases:
            cur.execute(f"DROP DATABASE IF EXISTS `{d}`")
            cur.execute(f"CREATE DATABASE `{d}`")
            cur.execute(f"GRANT ALL PRIVILEGES ON `{d}`.* TO '{USER}'@'%'")
        cur.execute("SELECT @@gtid_binlog_pos")
        (pos,) = cur.fetchone()
    for r in replicas:
        with admin(r) as c, c.cursor() as cur:
            cur.execute("SELECT MASTER_GTID_WAIT(%s, 60)", (pos,))
            (waited,) = cur.fetchone()
            if waited != 0:
                sys.exit(f"replica on port {r} did not reach {pos}")


def outcomes(junit):
    """test id -> passed | failed | error | skipped, from pytest's JUnit XML."""
    seen = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        test = f"{case.get('classname')}::{case.get('name')}"
        kinds = [child.tag for child in case]
        outcome = "passed"
        for kind in ("error", "failure", "skipped"):
            if kind in kinds:
                outcome = {"failure": "failed"}.get(kind, kind)
                break
        # A test failing in its call and in its teardown is listed once per phase: keep the worst.
        if seen.get(test) in ("failed", "error") and outcome == "passed":
            continue
        seen[test] = outcome
    return seen


def run(suite, port, db, replicas, primary, workdir, side):
    out = workdir / f"{suite}-{side}.xml"
    cwd, args, env, extra_dbs = SUITES[suite](port, db, out)
    reset(primary, replicas, [db, *extra_dbs])
    cmd = [str(PYTHON), "-m", "pytest", *args, "-p", "no:cacheprovider", "-q",
           f"--junitxml={out}", "-o", "junit_family=xunit1"]
    proc = subprocess.run(cmd, cwd=cwd, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=900)
    tail = proc.stdout.strip().splitlines()[-1:] or ["(no output)"]
    print(f"{suite} {side}: {tail[0]}")
    if not out.exists():
        sys.exit(f"{suite} {side}: pytest wrote no results\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return outcomes(out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("suite", choices=SUITES)
    p.add_argument("--direct", type=int, required=True)
    p.add_argument("--gateway", type=int, required=True)
    p.add_argument("--replicas", default="")
    p.add_argument("--database", default=None)
    a = p.parse_args()
    if not PYTHON.exists():
        sys.exit(f"{PYTHON} missing: run scripts/suites-install")
    replicas = [int(x) for x in a.replicas.split(",") if x]
    db = a.database or "app_suite_" + a.suite.replace("-", "_")
    listed = {
        d["test"]: d
        for d in tomllib.loads((HERE / "differences.toml").read_text()).get("difference", [])
        if d["suite"] == a.suite
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        direct = run(a.suite, a.direct, db, replicas, a.direct, work, "direct")
        gateway = run(a.suite, a.gateway, db, replicas, a.direct, work, "gateway")
    problems = []
    for test in sorted(set(direct) | set(gateway)):
        d, g = direct.get(test, "absent"), gateway.get(test, "absent")
        entry = listed.get(test)
        if entry and entry.get("kind") == "timing":
            continue  # asserts a timing the extra hop can change either way; reported, not compared
        if d != g and not entry:
            problems.append(f"differs: {test}: direct {d}, through Sluice {g}")
        elif d == g and entry:
            problems.append(f"listed in differences.toml but the same both ways ({d}): {test}")
    counts = lambda r: {k: sum(1 for v in r.values() if v == k) for k in ("passed", "failed", "error", "skipped")}
    print(f"{a.suite}: direct {counts(direct)}; through Sluice {counts(gateway)}; listed {len(listed)}")
    for line in problems:
        print(line)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
