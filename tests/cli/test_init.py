"""``si init seq``: templates that pack and pass the hub's package checks, written offline."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from si.package.manifest import manifest_warnings, read_manifest
from tests.cli.conftest import RunSi, one_error_line

KINDS = ["generator", "transformer", "consumer"]


@pytest.mark.parametrize("kind", KINDS)
def test_python_templates_pack_cleanly(run_si: RunSi, tmp_path: Path, kind: str) -> None:
    target = tmp_path / f"py-{kind}"
    result = run_si("init", "seq", "py", kind, "-p", str(target), env={"http_proxy": "http://0:1"})
    assert result.returncode == 0, result.stderr
    manifest = json.loads((target / "package.json").read_text())
    assert manifest["main"] == "main.py"
    assert "python3" in manifest["engines"]
    assert manifest["name"] == f"py-{kind}"
    assert manifest_warnings(read_manifest(target)) == []
    compile((target / "main.py").read_text(), "main.py", "exec")  # valid Python
    packed = run_si("seq", "pack", str(target), "-c")
    assert packed.returncode == 0, packed.stderr
    with tarfile.open(fileobj=io.BytesIO(packed.stdout)) as archive:
        assert {"package.json", "main.py"} <= set(archive.getnames())


@pytest.mark.parametrize("kind", KINDS)
def test_javascript_templates(run_si: RunSi, tmp_path: Path, kind: str) -> None:
    assert run_si("i", "seq", "js", kind, "-p", "js").returncode == 0
    manifest = json.loads((tmp_path / "js" / "package.json").read_text())
    assert (manifest["main"], list(manifest["engines"])) == ("index.js", ["node"])
    assert "module.exports" in (tmp_path / "js" / "index.js").read_text()
    assert run_si("init", "seq", "js", kind, "-p", "js", "--force").returncode == 0


def test_typescript_template_builds_into_dist(run_si: RunSi, tmp_path: Path) -> None:
    assert run_si("init", "sequence", "ts", "generator", "-p", "ts").returncode == 0
    manifest = json.loads((tmp_path / "ts" / "package.json").read_text())
    assert manifest["main"] == "dist/index.js"
    assert manifest["scripts"]["build"] == "tsc"
    tsconfig = json.loads((tmp_path / "ts" / "tsconfig.json").read_text())
    assert tsconfig["compilerOptions"]["outDir"] == "dist"
    assert (tmp_path / "ts" / "src" / "index.ts").exists()


def test_defaults_are_sths_js_transformer_in_the_current_directory(
    run_si: RunSi, tmp_path: Path
) -> None:
    assert run_si("init", "seq").returncode == 0
    assert "for await" in (tmp_path / "index.js").read_text()


def test_existing_files_are_not_overwritten(run_si: RunSi, tmp_path: Path) -> None:
    (tmp_path / "package.json").write_text("{}")
    message = one_error_line(run_si("init", "seq", "py"))
    assert "package.json" in message
    assert "--force" in message
    assert (tmp_path / "package.json").read_text() == "{}"


def test_bad_language_is_a_usage_error(run_si: RunSi) -> None:
    assert "is not one of" in one_error_line(run_si("init", "seq", "rust"))
