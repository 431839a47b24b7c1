"""Sequence packages: package.json checks, packing a directory, safe unpacking of an upload.

Modules: :mod:`~si.package.manifest` (package.json), :mod:`~si.package.siignore` (what the packer
leaves out), :mod:`~si.package.pack` (directory -> tar.gz) and :mod:`~si.package.unpack`
(tar.gz -> directory, refusing anything that could reach outside it).
"""
