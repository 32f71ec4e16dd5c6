"""nats-server accounts for elizamesh: one account per tenant, one user per role.

Rendered from ``contracts.subjects.permissions`` and ``connector_permissions``,
so what a service may publish and subscribe to follows the subjects it uses.
Each tenant is a NATS account of its own (accounts share nothing unless they
export it, and these export nothing), holding its namespace's streams; within
it, each service, the admin and each connector is a user with an allow-list.

Passwords are nats-server variables by default (``$ELIZA_RUNTIME_PASSWORD``):
nats-server reads a variable the file does not define from its environment,
so the file holds no secret and can be checked in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from contracts.subjects import (
    ROLES,
    Permissions,
    Subjects,
    connector_permissions,
    permissions,
    validate_owner,
)


@dataclass(frozen=True)
class Connector:
    """A platform connector: its name (its NATS user, its runs) and the platforms it delivers."""

    name: str
    sources: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Connector:
        """Read ``name`` or ``name:source1,source2`` (``elizamesh nats-config --connector``)."""
        name, _, sources = text.partition(":")
        return cls(validate_owner(name), tuple(s for s in sources.split(",") if s))


@dataclass(frozen=True)
class Tenant:
    """One stack: a namespace in an account of its own, and the connectors allowed into it."""

    namespace: str
    connectors: tuple[Connector, ...] = ()
    account: str = field(default="")

    @property
    def account_name(self) -> str:
        """The NATS account (the upper-cased namespace unless given)."""
        return self.account or self.namespace.upper().replace("-", "_")


def user_name(namespace: str, role: str) -> str:
    """The NATS user of ``role`` (a service role, ``admin`` or a connector name) in a namespace.

    User names are global to a nats-server, so they carry the namespace.
    """
    return f"{namespace}-{role}"


def password_variable(namespace: str, role: str) -> str:
    """The environment variable nats-server reads the user's password from."""
    return f"{namespace}_{role}_PASSWORD".upper().replace("-", "_")


def _quote(value: str) -> str:
    # Quoted, or nats-server would read "$JS.API..." as a variable.
    return json.dumps(value)


def _permissions_block(perms: Permissions, indent: str) -> list[str]:
    lines = [f"{indent}permissions: {{"]
    if perms.publish or not perms.allow_responses:
        # With allow_responses and no publish list, nats-server allows replies only.
        lines.append(f"{indent}  publish: {{ allow: [{', '.join(map(_quote, perms.publish))}] }}")
    lines.append(f"{indent}  subscribe: {{ allow: [{', '.join(map(_quote, perms.subscribe))}] }}")
    if perms.allow_responses:
        lines.append(f"{indent}  allow_responses: true")
    lines.append(f"{indent}}}")
    return lines


def accounts_config(
    tenants: Sequence[Tenant], *, passwords: Mapping[str, str] | None = None
) -> str:
    """The ``accounts { ... }`` block of a nats-server config for ``tenants``.

    Args:
        tenants: One per account; namespaces must differ.
        passwords: Password by user name; a user without one gets its
            ``password_variable`` (read from nats-server's environment).
    """
    passwords = passwords or {}
    if len({t.namespace for t in tenants}) != len(tenants):
        raise ValueError("each tenant needs a namespace of its own")
    lines = ["accounts {"]
    for tenant in tenants:
        subjects = Subjects(tenant.namespace)
        users: list[tuple[str, Permissions]] = [
            (role, permissions(subjects, role)) for role in ROLES
        ]
        users += [
            (c.name, connector_permissions(subjects, c.name, c.sources)) for c in tenant.connectors
        ]
        lines += [f"  {tenant.account_name}: {{", "    jetstream: enabled", "    users: ["]
        for role, perms in users:
            user = user_name(tenant.namespace, role)
            secret = passwords.get(user)
            password = _quote(secret) if secret else f"${password_variable(tenant.namespace, role)}"
            lines += ["      {", f"        user: {_quote(user)}", f"        password: {password}"]
            lines += _permissions_block(perms, "        ")
            lines.append("      }")
        lines += ["    ]", "  }"]
    lines.append("}")
    return "\n".join(lines) + "\n"
