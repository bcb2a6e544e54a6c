"""Keep a state checkout at its remote branch head (dulwich fetch + fast-forward).

Used by ``watch --remote``: the checkout is SDP's own copy of the state repository. A fetch
uses the runner's git credentials per call (never stored; host git config ignored); a remote
head that is not a fast-forward of the checkout is refused with a clear error and nothing is
changed, so a force-push never silently rewrites what SDP converges to.
"""

from __future__ import annotations

from pathlib import Path

from dulwich import porcelain
from dulwich.graph import can_fast_forward
from dulwich.objects import ObjectID
from dulwich.refs import Ref
from dulwich.repo import Repo

from sdp_node.gitremote import remote_client
from sdp_node.protocol import Credentials
from sdp_reconciler.errors import SdpError


class StateSync:
    def __init__(self, directory: Path, remote: str, branch: str,
                 credentials: Credentials | None) -> None:
        self.directory = directory
        self.remote = remote
        self.branch = branch.encode()
        self.credentials = credentials

    def _open(self) -> Repo:
        if (self.directory / ".git").is_dir():
            return Repo(str(self.directory))
        self.directory.mkdir(parents=True, exist_ok=True)
        return Repo.init(str(self.directory))

    def sync(self) -> str | None:
        """Fetch and fast-forward; the new head when it moved, else None."""
        repo = self._open()
        try:
            client, path = remote_client(self.remote, self.credentials)
            wanted = Ref(b"refs/heads/" + self.branch)

            def wants(refs: dict[bytes, bytes], depth: int | None = None) -> list[bytes]:
                sha = refs.get(wanted)
                return [sha] if sha and ObjectID(sha) not in repo.object_store else []

            try:
                result = client.fetch(path, repo, determine_wants=wants)  # type: ignore[attr-defined]
            except Exception as e:  # translated: the raw error never leaves
                raise SdpError(
                    f"cannot fetch the state repository {self.remote}: {type(e).__name__}"
                ) from None
            remote_head = result.refs.get(wanted)
            if remote_head is None:
                raise SdpError(f"the state repository {self.remote} has no branch "
                               f"{self.branch.decode()!r}")
            remote_id = ObjectID(remote_head)
            repo.refs[Ref(b"refs/remotes/origin/" + self.branch)] = remote_id
            try:
                local = repo.refs[wanted]
            except KeyError:
                local = None
            if local == remote_id:
                return None
            if local is not None and not can_fast_forward(repo, local, remote_id):
                raise SdpError(
                    f"the state checkout {self.directory} is at {local.decode()[:7]}, which the "
                    f"remote head {remote_id.decode()[:7]} does not contain (force-push?): "
                    "refusing to rewrite it; fix the remote or remove the checkout"
                )
            repo.refs[wanted] = remote_id
            repo.refs.set_symbolic_ref(Ref(b"HEAD"), wanted)
            porcelain.reset(repo, "hard", remote_id)
            return remote_id.decode()
        finally:
            repo.close()
