"""Names: which user-given names are valid, and the one mapping from names to resource names.

Sandbox, template, environment, service and node names become Docker container, network and
path names, so they are checked once, strictly, wherever they enter SDP. The reconciler checks
them when it loads the state directory; the agent checks them again on every plan it receives.
Both sides call the functions here (``sdp_node`` never imports ``sdp_reconciler``).

The mapping, documented in docs/state.md:

* a name is 1-40 characters: ASCII letters and digits in runs joined by single ``-`` or ``_``
  (``QA-LOGIN-ERROR``, ``qa_login``, ``account``);
* its *slug* is the name lower-cased with ``_`` turned into ``-`` (``QA-LOGIN-ERROR`` ->
  ``qa-login-error``);
* sandbox ``S`` gets network ``{prefix}-{slug(S)}``; its service ``X`` runs in container
  ``{prefix}-{slug(S)}-{slug(X)}``; its gateway in ``{prefix}-{slug(S)}-gateway``;
* ``prefix`` is the installation's ``resource_prefix`` (default ``sandbox``, so
  ``QA-LOGIN-ERROR``/``account`` runs in ``sandbox-qa-login-error-account``). Docker names are
  global to an engine: two installations sharing one (a demo and a test run, say) set different
  prefixes, and the reconciler refuses an agent whose prefix differs from the state's;
* data services (docs/infra.md): sandbox ``S``'s PostgreSQL entry ``D`` is database and role
  ``{prefix}_{slug(S)}_{slug(D)}`` with every ``-`` as ``_`` (``sandbox_qa_login_error_db``: a
  plain SQL identifier, no quoting in psql); its Redis entry ``C`` is ACL user
  ``{prefix}-{slug(S)}-{slug(C)}`` owning the keys that start with that name and ``:``; its
  RabbitMQ entry ``Q`` is vhost and user ``{prefix}-{slug(S)}-{slug(Q)}``.

Distinct names can share a slug (``QA-X`` and ``qa_x``) and distinct (sandbox, service) pairs can
share a container name (``a-b``/``c`` and ``a``/``b-c``): the loader reports both as errors, so
within one state directory a resource name identifies exactly one thing.
"""

from __future__ import annotations

import posixpath
import re

from msgspec import Struct

NAME_MAX = 40
RESOURCE_NAME_MAX = 63
STAGING_SUFFIX = "__sdp_new"
DATABASE_NAME_MAX = 63 - len(STAGING_SUFFIX)
GATEWAY = "gateway"
"""The pseudo-service name of a sandbox's gateway; never a service name."""

_NAME = re.compile(r"[A-Za-z0-9]+(?:[-_][A-Za-z0-9]+)*")
_SHA = re.compile(r"[0-9a-f]{40}")


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid SDP name, or None when it is."""
    if not name:
        return "a name cannot be empty"
    if len(name) > NAME_MAX:
        return f"{name!r} is {len(name)} characters long; names have at most {NAME_MAX}"
    if not _NAME.fullmatch(name):
        return (
            f"{name!r} is not a valid name: use letters, digits and single '-' or '_' between "
            "them (e.g. QA-LOGIN-ERROR)"
        )
    return None


def slug(name: str) -> str:
    """The resource-name form of a valid name: lower case, ``_`` as ``-``."""
    return name.lower().replace("_", "-")


DEFAULT_PREFIX = "sandbox"
PREFIX_MAX = 20
_PREFIX = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def prefix_problem(prefix: str) -> str | None:
    """Why ``prefix`` cannot start SDP's resource names, or None when it can."""
    if not _PREFIX.fullmatch(prefix) or len(prefix) > PREFIX_MAX:
        return (
            f"resource prefix {prefix!r} must be 1-{PREFIX_MAX} lower-case letters and digits "
            "in runs joined by single '-' (e.g. 'sandbox', 'sdp-staging')"
        )
    return None


class ResourceNames(Struct, frozen=True):
    """The one mapping from (sandbox, service) to Docker names, for one installation."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        problem = prefix_problem(self.prefix)
        if problem:
            raise ValueError(problem)

    def network(self, sandbox: str) -> str:
        return f"{self.prefix}-{slug(sandbox)}"

    def container(self, sandbox: str, service: str) -> str:
        """Container of ``service`` in ``sandbox``; ``service == GATEWAY`` names the gateway."""
        return f"{self.prefix}-{slug(sandbox)}-{slug(service)}"

    def owns(self, name: str) -> bool:
        """Whether ``name`` is in this installation's name space (a container or network)."""
        return name.startswith(f"{self.prefix}-")

    def database(self, sandbox: str, entry: str) -> str:
        """PostgreSQL database (and role) of a sandbox's data entry: ``sandbox_qa_x_db``."""
        return f"{self.prefix}_{slug(sandbox)}_{slug(entry)}".replace("-", "_")

    def staging_database(self, sandbox: str, entry: str) -> str:
        """Where a clone is made before it is renamed to ``database``: a crash never leaves a
        half-made database under the real name."""
        return self.database(sandbox, entry) + STAGING_SUFFIX

    def captured_source(self, source: str) -> str:
        """The template database of a source SDP captured from a sandbox: ``sandbox__src_qa``.
        The double ``_`` keeps it apart from every sandbox database (a slug never starts with
        ``_``); ``captured_problem`` checks ``source`` first."""
        return f"{self.prefix}__src_{slug(source)}".replace("-", "_")

    def captured_problem(self, source: str) -> str | None:
        """Why ``source`` cannot name a captured source, or None."""
        problem = name_problem(source)
        if problem:
            return f"source name: {problem}"
        database = self.captured_source(source)
        if len(database) > DATABASE_NAME_MAX:
            return (f"source name {source!r} makes database {database!r} of {len(database)} "
                    f"characters; at most {DATABASE_NAME_MAX}: shorten it")
        return None

    def redis_user(self, sandbox: str, entry: str) -> str:
        """Redis ACL user of a sandbox's data entry; its keys start with ``redis_key_prefix``."""
        return f"{self.prefix}-{slug(sandbox)}-{slug(entry)}"

    def redis_key_prefix(self, sandbox: str, entry: str) -> str:
        return self.redis_user(sandbox, entry) + ":"

    def rabbitmq_vhost(self, sandbox: str, entry: str) -> str:
        """RabbitMQ vhost, and user of the same name, of a sandbox's data entry."""
        return f"{self.prefix}-{slug(sandbox)}-{slug(entry)}"

    def data_problem(self, sandbox: str, entry: str) -> str | None:
        """Why the data-service names of (sandbox, entry) are unusable, or None."""
        database = self.database(sandbox, entry)
        if len(database) > DATABASE_NAME_MAX:
            return (
                f"database name {database!r} would be {len(database)} characters; SDP's "
                f"PostgreSQL names have at most {DATABASE_NAME_MAX} (PostgreSQL keeps 63, and "
                f"clones are made as <name>{STAGING_SUFFIX} first): shorten the sandbox or "
                "entry name"
            )
        return None

    def problem(self, sandbox: str, service: str) -> str | None:
        """Why the container name of (sandbox, service) is unusable, or None."""
        name = self.container(sandbox, service)
        if len(name) > RESOURCE_NAME_MAX:
            return (
                f"container name {name!r} would be {len(name)} characters; Docker DNS names "
                f"have at most {RESOURCE_NAME_MAX}: shorten the sandbox or service name"
            )
        return None


DEFAULT_NAMES = ResourceNames()


# git check-ref-format --branch rules (which include "no leading '-'", so a branch can never read
# as an option), plus two of SDP's own: at most 200 characters, and never '@' alone.
_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def branch_problem(branch: str) -> str | None:
    """Why ``branch`` is not a usable branch name, or None when it is."""
    if not branch:
        return "a branch name cannot be empty"
    if len(branch) > 200:
        return "branch name is longer than 200 characters"
    if branch.startswith("-"):
        return f"branch {branch!r} starts with '-'"
    if branch == "HEAD":
        return "'HEAD' names the current commit, not a branch; git forbids it as a branch name"
    if _REF_FORBIDDEN.search(branch):
        return (
            f"branch {branch!r} contains a character git forbids in ref names "
            "(space, control character, ~ ^ : ? * [ or \\)"
        )
    if branch == "@" or "@{" in branch:
        return f"branch {branch!r} contains '@{{' or is '@', which git forbids"
    if ".." in branch:
        return f"branch {branch!r} contains '..', which git forbids"
    if branch.startswith("/") or branch.endswith("/") or "//" in branch:
        return f"branch {branch!r} has an empty path component (leading, trailing or double '/')"
    if branch.endswith("."):
        return f"branch {branch!r} ends with '.', which git forbids"
    for part in branch.split("/"):
        if part.startswith("."):
            return f"branch {branch!r} has a component starting with '.', which git forbids"
        if part.endswith(".lock"):
            return f"branch {branch!r} has a component ending with '.lock', which git forbids"
    return None


def commit_problem(commit: str) -> str | None:
    """Why ``commit`` is not a full lower-case hex SHA-1, or None."""
    if _SHA.fullmatch(commit):
        return None
    return f"commit {commit!r} is not a full 40-character lower-case hex SHA"


FORBIDDEN_CONTAINER_DIRS = ("/proc", "/sys", "/dev")


def container_path_problem(path: str) -> str | None:
    """Why ``path`` cannot be where an environment file is mounted in a container, or None.

    Absolute and normalised (no ``.``, ``..``, ``//`` or trailing ``/``), and never under the
    kernel's pseudo file systems, where a mount either fails with the runtime's error text or
    shadows what the process reads about itself. (The agent also refuses the repository's
    own mount target, which only it knows.)
    """
    if "\x00" in path or not path.startswith("/") or posixpath.normpath(path) != path \
            or path.startswith("//") or path == "/":
        return (f"file path {path!r} must be an absolute, normalised path to a file (no '.', "
                "'..', '//' or trailing '/')")
    for folder in FORBIDDEN_CONTAINER_DIRS:
        if path == folder or path.startswith(folder + "/"):
            return f"file path {path!r} is under {folder}, where SDP mounts nothing"
    return None
