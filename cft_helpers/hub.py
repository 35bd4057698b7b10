"""Hugging Face hub downloads: every hub model and dataset of the params goes through :func:`snapshot`.

    from cft_helpers.hub import HubRequest, snapshot
    snap = snapshot(HubRequest("tatsu-lab/alpaca", "dataset", revision=None))
    snap.folder, snap.sha        # .../datasets--tatsu-lab--alpaca/snapshots/<sha>, "<sha>"

One function, ``huggingface_hub.snapshot_download``, downloads into the HF cache (``HF_HOME`` /
``HF_HUB_CACHE``) and returns the snapshot folder, which the cache names by the commit sha the
revision resolved to: that name is the revision recorded in the data report and the fetch record.
The loaders then read the folder like any local folder, so a later process finds the same files
offline (``HF_HUB_OFFLINE=1``): ``python -m cft_helpers.fetch`` asks for exactly what the loaders
ask for (:func:`cft_helpers.models.hub_request`, :func:`cft_helpers.data.loaders.dataset_request`).

Access problems end in :class:`HubError` naming the repository and what to do: a gated or private
repository needs a token (``HF_TOKEN`` or ``hf auth login``), a missing one in offline mode the
fetch step. huggingface_hub is light (no torch), so it is imported at module level and tests
replace :data:`snapshot_download` here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                    RepositoryNotFoundError, RevisionNotFoundError)

_SHA = re.compile(r"[0-9a-f]{40}")
TOKEN_HELP = ("export HF_TOKEN=hf_... (a read token from https://huggingface.co/settings/tokens) or run "
              "`hf auth login` (older huggingface_hub: `huggingface-cli login`)")


class HubError(RuntimeError):
    """A hub repository cannot be had; the message names it and what to do."""


class GatedRepoAccessError(HubError):
    """A gated or private repository without a token that may read it."""


@dataclass(frozen=True)
class HubRequest:
    """One download: a repository at a revision, limited to files matching ``allow_patterns``
    (None: all files)."""

    repo_id: str
    repo_type: str = "model"           # "model" or "dataset"
    revision: str | None = None        # branch, tag or sha; None: main
    allow_patterns: tuple[str, ...] | None = None

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{'datasets/' if self.repo_type == 'dataset' else ''}{self.repo_id}"

    def label(self) -> str:
        return f"{self.repo_type} {self.repo_id}@{self.revision or 'main'}"


@dataclass(frozen=True)
class Snapshot:
    request: HubRequest
    folder: Path
    sha: str | None                    # the commit the revision resolved to (the folder's name)


# What this process downloaded or found: (repo_type, repo_id, revision) -> Snapshot. Data
# preparation reads the resolved sha of each hub dataset from it for the data report.
_SEEN: dict[tuple[str, str, str | None], Snapshot] = {}


def is_hub_id(path: str) -> bool:
    """Whether ``path`` names a hub repository ("org/name"), not a local file or folder."""
    return (not path.startswith((".", "/", "~")) and not Path(path).exists()
            and re.fullmatch(r"[\w.-]+/[\w.-]+", path) is not None)


def snapshot(req: HubRequest) -> Snapshot:
    """The local folder of ``req`` in the HF cache, downloaded if needed; raises HubError naming
    the repository for a gated, private, missing or (offline) uncached one."""
    try:
        folder = Path(snapshot_download(req.repo_id, repo_type=req.repo_type, revision=req.revision,
                                        allow_patterns=list(req.allow_patterns) if req.allow_patterns else None))
    except GatedRepoError as exc:
        raise GatedRepoAccessError(
            f"{req.label()} is gated on the Hugging Face hub and this machine has no token allowed to read it: "
            f"accept its terms at {req.url} with your account, then {TOKEN_HELP}, and download it once with "
            f"`python -m cft_helpers.fetch --params <your params>`. ({type(exc).__name__}: {exc})") from exc
    except RevisionNotFoundError as exc:
        raise HubError(f"{req.label()}: revision {req.revision!r} does not exist in {req.url} "
                       f"(a branch, tag or 40-character commit sha): {exc}") from exc
    except RepositoryNotFoundError as exc:  # 401 / 404: a typo, or private/gated without a token
        raise GatedRepoAccessError(
            f"{req.label()} was not found on the Hugging Face hub, or it is private or gated and this "
            f"machine has no token allowed to read it: check the id ({req.url}); if it is gated, accept "
            f"its terms there, then {TOKEN_HELP}. ({type(exc).__name__}: {exc})") from exc
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            raise GatedRepoAccessError(
                f"{req.label()}: the hub refused access (HTTP {status}); if it is gated, accept its terms "
                f"at {req.url}, then {TOKEN_HELP}. ({exc})") from exc
        raise HubError(f"{req.label()}: download failed: {type(exc).__name__}: {exc}") from exc
    except LocalEntryNotFoundError as exc:  # offline (HF_HUB_OFFLINE=1, no network) and not cached
        raise HubError(
            f"{req.label()} is not in the local Hugging Face cache and the hub cannot be reached (offline "
            f"or HF_HUB_OFFLINE=1): run `python -m cft_helpers.fetch --params <your params>` once on a "
            f"machine with network and the same HF_HOME. ({type(exc).__name__}: {exc})") from exc
    snap = Snapshot(req, folder, folder.name if _SHA.fullmatch(folder.name) else None)
    _SEEN[(req.repo_type, req.repo_id, req.revision)] = snap
    return snap


def resolved_sha(repo_type: str, repo_id: str, revision: str | None) -> str | None:
    """The commit this process resolved ``repo_id@revision`` to (None when it was not fetched here)."""
    snap = _SEEN.get((repo_type, repo_id, revision))
    return snap.sha if snap else None
