"""A credentials policy written in Python: client users and their backend accounts from a
secret holding JSON, like the Rust `secrets` policy. Called once per login, on a fresh
instance, so Python's cost per call is affordable here.

Settings:
  secret = "users.json"     the secret's name ([secrets] in the gateway's config says where
                            secrets may be read)

The secret: {"alice": {"password": "...", "backend-user": "app", "backend-password": "...",
             "max-connections": 10}, ...}

Build:  scripts/build-python-policy plugins/python/credentials credentials policies/py-credentials.wasm
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.identity import Grant
from wit_world.imports import host

settings = {"secret": "users.json"}


class Lifecycle(exports.Lifecycle):
    def configure(self, raw: str) -> None:
        given = json.loads(raw)
        unknown = set(given) - set(settings)
        if unknown:
            raise Err(f"unknown setting(s): {', '.join(sorted(unknown))}")
        settings.update(given)


class Identity(exports.Identity):
    def resolve(self, hello) -> Grant:
        text = host.secret(settings["secret"])
        if text is None:
            raise Err(f"secret '{settings['secret']}' is not available")
        users = json.loads(text)
        user = users.get(hello.user)
        if user is None:
            # The reason goes to the gateway's log; the client sees access denied.
            raise Err(f"unknown user '{hello.user}'")
        return Grant(
            password=user["password"],
            auth_plugin=user.get("auth-plugin", "mysql_native_password"),
            backend_user=user.get("backend-user", hello.user),
            backend_password=user.get("backend-password", user["password"]),
            max_connections=user.get("max-connections", 0),
            max_statements_per_second=user.get("max-statements-per-second", 0),
            statements_burst=user.get("statements-burst", 0),
            statement_timeout_ms=user.get("statement-timeout-ms"),
            backend_group=user.get("backend-group"),
        )
