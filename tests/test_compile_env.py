"""``scripts/compile_env.py``: the nox sessions' byte-compilation, once per set of requirements."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compile_env.py"


def test_compiles_once_per_key_and_skips_what_does_not_compile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = importlib.util.spec_from_file_location("compile_env", SCRIPT)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    site = tmp_path / "site-packages"
    (site / "pkg").mkdir(parents=True)
    (site / "pkg" / "good.py").write_text("x = 1\n")
    (site / "pkg" / "broken.py").write_text("def (:\n")  # as pip does, skipped without failing
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    monkeypatch.setattr(script.sysconfig, "get_path", lambda name: str(site))
    cache = site / "pkg" / "__pycache__"

    def compiled() -> list[str]:
        return sorted(p.name.split(".")[0] for p in cache.iterdir()) if cache.exists() else []

    script.main("a", workers=1)
    assert compiled() == ["good"]
    assert (tmp_path / ".compiled").read_text() == "a"
    for pyc in cache.iterdir():
        pyc.unlink()
    script.main("a", workers=1)  # the same requirements: nothing to do
    assert compiled() == []
    script.main("b", workers=1)  # other requirements: compiled again
    assert compiled() == ["good"]
    assert (tmp_path / ".compiled").read_text() == "b"
