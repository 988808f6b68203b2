"""A deliberately bad Python guard, for the sandbox tests: a statement containing
`misbehave:<what>` makes it try <what> and deny the statement with what happened.

  open-file    open("/etc/passwd")           must fail: no preopened directories
  list-dir     os.listdir("/")               must fail
  connect      a TCP connection to 127.0.0.1 must fail: no network
  resolve      a name lookup                 must fail
  environ      the environment               must be empty
  clock        time.time()                   fixed at 0
  loop         never returns                 hits the deadline
  memory-bomb  allocates without end         hits the memory cap
  raise        an exception                  traps
"""

import os
import time

from wit_world import exports
from wit_world.exports.safety import Checked, Denial, Verdict_Allow, Verdict_Deny
from wit_world.imports import statement


def attempt(what: str) -> str:
    try:
        if what == "open-file":
            with open("/etc/passwd") as f:
                return "read " + str(len(f.read())) + " bytes"
        if what == "list-dir":
            return "listed " + ",".join(os.listdir("/"))
        if what == "connect":
            import socket

            s = socket.create_connection(("127.0.0.1", 22), timeout=1)
            return "connected " + str(s)
        if what == "resolve":
            import socket

            return "resolved " + str(socket.getaddrinfo("localhost", 80))
        if what == "environ":
            return "environment " + repr(dict(os.environ))
        if what == "clock":
            return "time " + repr(time.time())
        if what == "loop":
            while True:
                pass
        if what == "memory-bomb":
            hoard = []
            while True:
                hoard.append(bytearray(1 << 20))
        if what == "raise":
            raise RuntimeError("misbehave raised on purpose")
        return "unknown " + what
    except (OSError, ImportError, AttributeError) as e:
        return "refused " + type(e).__name__ + ": " + str(e)


class Lifecycle(exports.Lifecycle):
    def configure(self, raw: str) -> None:
        pass


class Safety(exports.Safety):
    def check(self, q, s) -> Checked:
        sql = statement.sql()
        marker = sql.find("misbehave:")
        if marker < 0:
            return Checked(Verdict_Allow(), None)
        what = sql[marker + len("misbehave:"):].split("'")[0].strip()
        return Checked(Verdict_Deny(Denial(1105, what + ": " + attempt(what))), None)
