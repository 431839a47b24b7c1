"""The digest of a package's content, the same for every archive of the same tree.

Names, types, modes (permission bits), link targets and bytes of every member, in name order;
timestamps and owners are left out, so packing a fresh clone gives the digest of the last one.
The hub lists it with each sequence (``digest``); ``si apply`` uses it to tell a sequence the
hub has from one it must upload.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from typing import BinaryIO

from si.errors import PackageError


def content_digest(archive: BinaryIO) -> str:
    """32 hex digits for the tar.gz read from ``archive``.

    Raises:
        PackageError: it is not a tar.gz.
    """
    digest = hashlib.sha256()
    try:
        with tarfile.open(fileobj=archive, mode="r:gz") as tar:
            members = sorted(tar.getmembers(), key=lambda member: member.name.rstrip("/"))
            for member in members:
                header = [member.name.rstrip("/"), member.type.decode(), member.mode & 0o777]
                digest.update(json.dumps([*header, member.linkname]).encode())
                if member.isreg():
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    while block := extracted.read(1 << 20):
                        digest.update(block)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise PackageError(f"not a tar.gz package: {exc}") from None
    return digest.hexdigest()[:32]
