"""Stored sequences: unpacked packages under ``<home>/sequences/<id>/``.

Layout of one sequence::

    sequences/<id>/sequence.json   id, upload time, package size (written last: its presence
                                   means the sequence is complete)
    sequences/<id>/package/        the unpacked package

An upload is unpacked into ``sequences/.new-<id>/`` and renamed into place only when it passed
every check, so a refused or interrupted upload leaves no sequence behind; leftovers of a crash
are removed when the hub starts.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from si.fsutil import read_json, write_json_atomic
from si.package.manifest import Manifest, read_manifest

log = logging.getLogger("si.hub.sequences")

NEW_PREFIX = ".new-"


@dataclass
class Sequence:
    id: str
    directory: Path
    manifest: Manifest
    package_size: int
    created: float
    instances: list[str] = field(default_factory=list)
    digest: str = ""  # si.package.digest of its package ("" for one stored before it was kept)
    # In the cluster's object store (si.daemon.cluster); never true on a hub without --nats.
    shared: bool = False

    @property
    def package_dir(self) -> Path:
        return self.directory / "package"

    def config(self) -> dict[str, Any]:
        """STH's SequenceConfig, built from package.json."""
        manifest = self.manifest
        config: dict[str, Any] = {
            "type": "process",
            "id": self.id,
            "name": manifest.name,
            "version": manifest.version,
            "entrypointPath": manifest.main,
            "sequenceDir": str(self.package_dir),
            "engines": dict(manifest.engines),
            "language": "py" if manifest.language == "python" else "js",
            "packageSize": self.package_size,
        }
        for key in ("description", "author", "keywords", "args", "repository"):
            if key in manifest.raw:
                config[key] = manifest.raw[key]
        return config

    def record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "config": self.config(),
            "location": "si",
            "instances": list(self.instances),
            "digest": self.digest,
        }


def store_upload(
    root: Path,
    sequence_id: str,
    archive: Path,
    package_size: int,
    *,
    max_bytes: int,
    label: str | None = None,
) -> Sequence:
    """Unpack ``archive`` as sequence ``sequence_id``, at most ``max_bytes`` unpacked; blocking,
    run it in a thread. ``label`` is the id its record names when it is to replace another
    sequence (``rename_sequence`` then only moves it, writing nothing).

    Raises:
        PackageError: the package is refused; nothing is left on disk.
        OSError: it could not be written (a full disk); nothing is left on disk.
    """
    from si.package.digest import content_digest
    from si.package.unpack import safe_extract  # tarfile and gzip: not needed to start a hub

    staging = root / f"{NEW_PREFIX}{sequence_id}"
    staging.mkdir(mode=0o700)
    try:
        manifest = safe_extract(archive, staging / "package", max_bytes=max_bytes)
        with archive.open("rb") as packed:
            digest = content_digest(packed)
        created = time.time()
        write_json_atomic(
            staging / "sequence.json",
            {
                "id": label or sequence_id,
                "created": created,
                "package_size": package_size,
                "digest": digest,
            },
        )
        staging.rename(root / sequence_id)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Sequence(sequence_id, root / sequence_id, manifest, package_size, created, digest=digest)


def load_sequences(root: Path) -> dict[str, Sequence]:
    """Every complete stored sequence; a damaged one is logged and skipped, never fatal."""
    sequences: dict[str, Sequence] = {}
    for directory in sorted(root.iterdir()):
        if directory.name.startswith(NEW_PREFIX):
            shutil.rmtree(directory, ignore_errors=True)  # an upload cut by a crash
            continue
        if not directory.is_dir():
            continue
        try:
            meta = read_json(directory / "sequence.json")
            manifest = read_manifest(directory / "package")
        except Exception as exc:
            log.warning("skipping sequence %s: %s", directory.name, exc)
            continue
        sequences[directory.name] = Sequence(
            directory.name,
            directory,
            manifest,
            int(meta.get("package_size", 0)),
            float(meta.get("created", 0.0)),
            digest=str(meta.get("digest") or ""),
        )
    return sequences


def remove_sequence(sequence: Sequence) -> None:
    # Rename first so a crash mid-delete leaves a directory the next start ignores.
    doomed = sequence.directory.with_name(f"{NEW_PREFIX}{sequence.id}")
    sequence.directory.rename(doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def rename_sequence(sequence: Sequence, new_id: str) -> Sequence:
    """Give a just-stored sequence the id of the one it replaces (``PUT``), which its record
    names already (``store_upload``'s label): a full disk cannot fail this half-way."""
    target = sequence.directory.with_name(new_id)
    sequence.directory.rename(target)
    return dataclasses.replace(sequence, id=new_id, directory=target, instances=[])
