"""The role → permission table, and what a user's roles grant. Pure.

The defaults (docs/access.md justifies each row):

=========  ==========================================================================
ADMIN      every permission, including manage_access and manage_nodes
BACKEND    deploy, delete_sandbox, manage_templates, manage_routes, manage_environments
QA         deploy, manage_routes
VIEWER     nothing
=========  ==========================================================================

``access.yaml``'s ``roles:`` replaces a role's set whole (ADMIN cannot be overridden). A user
with several roles holds the union; the role credited with a permission (for the audit) is the
first of the user's roles, in the order access.yaml lists them, that grants it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sdp_reconciler.access.model import AccessFile, Permission, Role

DEFAULT_PERMISSIONS: Mapping[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.BACKEND: frozenset({
        Permission.DEPLOY, Permission.DELETE_SANDBOX, Permission.MANAGE_TEMPLATES,
        Permission.MANAGE_ROUTES, Permission.MANAGE_ENVIRONMENTS,
    }),
    Role.QA: frozenset({Permission.DEPLOY, Permission.MANAGE_ROUTES}),
    Role.VIEWER: frozenset(),
}


def role_permissions(policy: AccessFile, role: Role) -> frozenset[Permission]:
    if role is Role.ADMIN:
        return DEFAULT_PERMISSIONS[Role.ADMIN]
    override = policy.roles.get(role)
    return frozenset(override) if override is not None else DEFAULT_PERMISSIONS[role]


def roles_of(policy: AccessFile | None, username: str) -> tuple[Role, ...]:
    """The roles of a user (as the page's sign-in names them); () for an unknown user."""
    if policy is None or username not in policy.users:
        return ()
    return tuple(policy.users[username].roles)


def permissions_of(policy: AccessFile, roles: Sequence[Role]) -> frozenset[Permission]:
    granted: frozenset[Permission] = frozenset()
    for role in roles:
        granted |= role_permissions(policy, role)
    return granted


def granting_role(policy: AccessFile, roles: Sequence[Role], permission: Permission) -> Role | None:
    """The first of ``roles`` that grants ``permission``, or None."""
    for role in roles:
        if permission in role_permissions(policy, role):
            return role
    return None
