"""Run folders on a filesystem URI (`s3://bucket/runs/x`, `gs://…`, `hdfs://…`): a local staging copy, mirrored.

Object stores have no rename, no append and no locks, which the run folder's guarantees rest on (shards
renamed into place, journals appended line by line, one run per folder). So a run with a URI `--output`
works in a local staging folder exactly as with a local `--output`, and the folder is mirrored:
  - before the run, the URI's manifest and shards are downloaded, so resuming on any machine skips what is
    stored there;
  - every shard is uploaded the moment it is written, the manifest whenever it is written; an object
    appears whole or not at all, so a killed run leaves no half shard there either;
  - after an export, its outputs (dataset folders, Parquet files, card, plots) replace those at the URI.
Rows in flight or still journalled in the staging folder when the run is killed reach the URI on the next
run from the same staging folder (or are played again elsewhere). One run per URI at a time: nothing at the
URI can hold a lock, so that is the user's part.

URIs are read by pyarrow.fs, with its query parameters and credentials (for S3: `?endpoint_override=
host:port&scheme=http&region=…`, the AWS_* variables, or `s3://KEY:SECRET@bucket/…`). Staging: $XDG_CACHE_HOME
(default ~/.cache) under apigen-mt/runs/, named by the URI's host and path only. Credentials in a URI (user and
password, query parameters named like keys, secrets, tokens or signatures) appear in no message and no folder
name; `redact_uri` and `redacted_command` hide them for anything else that shows or stores a URI.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.fs as pafs

from apigen_mt.pipeline.store.manifest import MANIFEST_NAME
from apigen_mt.pipeline.store.shards import (
    BLUEPRINTS_DIR,
    LOCK_NAME,
    TASK_REJECTIONS_NAME,
    TRAJECTORIES_DIR,
    RunFolderError,
    is_shard_name,
)

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# What a run writes; the rest is the export's.
_RUN_FILES = (MANIFEST_NAME, BLUEPRINTS_DIR, TRAJECTORIES_DIR, TASK_REJECTIONS_NAME)
# `user:password@` (or a lone `token@`) after a scheme, before the host.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#@\s]*)@")
# A query parameter named like a credential (access_key, secret_key, session_token, X-Amz-Signature,
# X-Amz-Credential, password, sig, ...); its value is what is hidden.
_SECRET_PARAMETER = re.compile(
    r"(?P<name>[?&;][^=&#\s]*(?:key|secret|token|password|passwd|pwd|signature|sig|credential|auth)[^=&#\s]*=)"
    r"(?P<value>[^&#\s]*)",
    re.IGNORECASE,
)
REDACTED = "***"
# Credentials shorter than this are not searched for in free text, where they would match ordinary words; real
# keys and secrets are far longer (the URI forms above are hidden whatever their length).
_SHORTEST_SCRUBBED = 6


def redact_uri(text: str) -> str:
    """`text` with the credentials of every URI in it replaced by ***: the user and password before the host,
    and the values of query parameters named like keys, secrets, tokens or signatures."""
    text = _USERINFO.sub(lambda match: f"{match['scheme']}{REDACTED}@", text)
    return _SECRET_PARAMETER.sub(lambda match: f"{match['name']}{REDACTED}", text)


def redacted_command(argv: Sequence[str]) -> list[str]:
    """A command line as a manifest may record it: every argument through `redact_uri`."""
    return [redact_uri(argument) for argument in argv]


def _uri_secrets(uri: str) -> set[str]:
    """The credentials written in `uri`, as written and percent-decoded, long enough to search free text for."""
    found = {part for match in _USERINFO.finditer(uri) for part in (match["userinfo"], *match["userinfo"].split(":"))}
    found |= {match["value"] for match in _SECRET_PARAMETER.finditer(uri)}
    found |= {unquote(secret) for secret in found}
    return {secret for secret in found if len(secret) >= _SHORTEST_SCRUBBED}


class RemoteError(RunFolderError):
    """The URI cannot be read or written; the message names it and says what to do."""


def is_uri(output: str) -> bool:
    """True for `scheme://…` other than file:// (a local folder by another name)."""
    return bool(_SCHEME.match(output)) and not output.startswith("file://")


class RemoteRun:
    """A run folder at `uri`, worked on in the local `staging` folder."""

    def __init__(self, uri: str, staging: Path | None = None) -> None:
        self._secrets = _uri_secrets(uri)
        try:
            self.filesystem, self.base = pafs.FileSystem.from_uri(uri)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            raise RemoteError(f"--output {redact_uri(uri)}: {self._scrub(str(exc))}") from None
        self.base = self.base.rstrip("/")
        self.uri = uri
        self.local = staging if staging is not None else _staging_folder(uri)
        self._local_fs = pafs.LocalFileSystem()

    def __str__(self) -> str:
        """The URI without its query and credentials, as messages show it."""
        return _USERINFO.sub(lambda match: match["scheme"], self.uri.split("?", 1)[0])

    def _scrub(self, text: str) -> str:
        """A message without the URI's credentials, in a URI or on their own (a server's error may quote them)."""
        text = redact_uri(text)
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, REDACTED)
        return text

    def pull(self) -> int:
        """Download the URI's manifest and shards that the staging folder lacks; how many files came."""
        remote = self._listing(_RUN_FILES)
        fetched = 0
        for relative, size in remote.items():
            target = self.local / relative
            # The URI's manifest is the truth about the run; a shard (never rewritten) is fetched when missing.
            if relative == MANIFEST_NAME or (is_shard_name(target.name) and not _same_size(target, size)):
                target.parent.mkdir(parents=True, exist_ok=True)
                self._copy(f"{self.base}/{relative}", str(target), to_remote=False)
                fetched += 1
        return fetched

    def push_file(self, path: Path) -> None:
        """Upload one file of the staging folder (a shard, the manifest) to its place at the URI."""
        self._copy(str(path), f"{self.base}/{path.relative_to(self.local).as_posix()}", to_remote=True)

    def streaming_upload(self) -> Callable[[Path], None]:
        """`push_file` for the shard writer: a failed upload is reported, not fatal (`push_run` retries it)."""
        warned = False

        def upload(path: Path) -> None:
            nonlocal warned
            try:
                self.push_file(path)
            except RemoteError as exc:
                if not warned:
                    print(f"warning: {exc}", file=sys.stderr)
                    warned = True

        return upload

    def push_run(self) -> int:
        """Upload the manifest and every shard the URI lacks (one whose streaming upload failed); how many."""
        remote = self._listing((BLUEPRINTS_DIR, TRAJECTORIES_DIR))
        pushed = 0
        for path in self._local_files((BLUEPRINTS_DIR, TRAJECTORIES_DIR)):
            relative = path.relative_to(self.local).as_posix()
            if is_shard_name(path.name) and remote.get(relative) != path.stat().st_size:
                self.push_file(path)
                pushed += 1
        self.push_file(self.local / MANIFEST_NAME)
        return pushed + 1

    def push_export(self) -> None:
        """Make the URI's export outputs those of the staging folder: upload them all, delete the URI's others."""
        names = [path.name for path in self.local.iterdir() if not _is_run_file(path.name)]
        remote = self._listing(None)
        local = set()
        for path in self._local_files(names):
            relative = path.relative_to(self.local).as_posix()
            local.add(relative)
            self.push_file(path)
        for relative in remote:
            if not _is_run_file(relative.split("/", 1)[0]) and relative not in local:
                self._call(self.filesystem.delete_file, f"{self.base}/{relative}")

    def _listing(self, tops: Iterable[str] | None) -> dict[str, int]:
        """relative path -> size of the URI's files (under `tops` only, when given)."""
        selector = pafs.FileSelector(self.base, recursive=True, allow_not_found=True)
        infos = self._call(self.filesystem.get_file_info, selector)
        found = {}
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            relative = info.path[len(self.base) + 1 :]
            if tops is None or relative.split("/", 1)[0] in tops:
                found[relative] = info.size
        return found

    def _local_files(self, tops: Iterable[str]) -> list[Path]:
        files = []
        for top in tops:
            path = self.local / top
            if path.is_file():
                files.append(path)
            elif path.is_dir():
                files += sorted(item for item in path.rglob("*") if item.is_file() and not item.name.startswith("."))
        return files

    def _copy(self, source: str, destination: str, *, to_remote: bool) -> None:
        source_fs, destination_fs = (
            (self._local_fs, self.filesystem) if to_remote else (self.filesystem, self._local_fs)
        )
        self._call(
            pafs.copy_files, source, destination, source_filesystem=source_fs, destination_filesystem=destination_fs
        )

    def _call(self, function, *args, **kwargs):
        try:
            return function(*args, **kwargs)
        except (OSError, pa.ArrowException) as exc:
            raise RemoteError(
                f"{self}: {self._scrub(str(exc).strip())}; check the URI, the credentials and the network (the run's "
                f"files are kept in {self.local}; rerun the same command to finish the upload)"
            ) from None


def _is_run_file(top: str) -> bool:
    return top in _RUN_FILES or top.startswith(".") or top == LOCK_NAME


def _same_size(path: Path, size: int | None) -> bool:
    try:
        return path.stat().st_size == size
    except OSError:
        return False


def _staging_folder(uri: str) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    scheme, rest = uri.split("://", 1)
    authority, _, path = rest.split("?", 1)[0].partition("/")
    # The host and path only: credentials before the host must not name a folder.
    place = re.sub(r"[^A-Za-z0-9._/-]", "_", f"{authority.rsplit('@', 1)[-1]}/{path}").strip("/")
    return (
        cache
        / "apigen-mt"
        / "runs"
        / scheme
        / Path(*[part for part in place.split("/") if part not in ("", ".", "..")])
    )
