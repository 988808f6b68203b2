"""A guard written in Python: refuses statements that touch tables under maintenance, and
writes from users who may only read. Copy this directory to start a policy of your own (see
docs/policies.md, "Policies in Python").

Settings (the manifest's [settings], handed to configure() as JSON):
  maintenance = ["orders", "app.invoices"]   tables refused while listed (a bare name matches
                                             it in any schema)
  read-only-users = ["report"]               users whose writes are refused
  code = 1105                                the MySQL error code of a refusal

Build:  scripts/build-python-policy plugins/python/guard guard policies/py-guard.wasm
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.safety import Checked, Denial, Reach, Verdict_Allow, Verdict_Deny
from wit_world.imports import host, session, statement
from wit_world.imports.types import StatementKind

WRITES = {
    StatementKind.INSERT,
    StatementKind.UPDATE,
    StatementKind.DELETE,
    StatementKind.REPLACE,
    StatementKind.DDL,
    StatementKind.LOAD_DATA,
}

# What configure() accepted; read by every check() of this instance.
settings = {"maintenance": [], "read-only-users": [], "code": 1105}


def under_maintenance(table: str) -> bool:
    name = table.rsplit(".", 1)[-1]
    return any(t == table or t == name for t in settings["maintenance"])


class Lifecycle(exports.Lifecycle):
    def configure(self, raw: str) -> None:
        given = json.loads(raw)
        unknown = set(given) - set(settings)
        if unknown:
            # An error refuses the policy: the previous version keeps serving.
            raise Err(f"unknown setting(s): {', '.join(sorted(unknown))}")
        settings.update(given)
        if settings["maintenance"]:
            host.log(host.Level.INFO, f"maintenance on for {settings['maintenance']}")


class Safety(exports.Safety):
    def check(self, q, s) -> Checked:
        # Both rules follow from the statement's shape and its user: the host reuses the
        # verdict for later statements of the same digest from the same user, without a call.
        reach = Reach(per_user=True, max_length=0xFFFFFFFF)
        if q.kind in WRITES and session.user() in settings["read-only-users"]:
            return deny(f"user '{session.user()}' may only read", reach)
        # Facts come by value; text costs a call into the host: read tables only if there are.
        if settings["maintenance"] and q.table_count > 0:
            for table in statement.tables():
                if under_maintenance(table):
                    return deny(f"table '{table}' is under maintenance; try again later", reach)
        return Checked(Verdict_Allow(), reach)


def deny(message: str, reach: Reach) -> Checked:
    return Checked(Verdict_Deny(Denial(settings["code"], message)), reach)
