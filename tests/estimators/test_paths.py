"""The one rule for estibench's on-disk caches (checkpoints, C kernel builds)."""

from __future__ import annotations

import pytest

from estimators import native
from estimators.paths import OFF, cache_dir, cache_off, replacing
from problems.real import task


@pytest.mark.parametrize("variable, name, of", [
    ("ESTIBENCH_CHECKPOINTS", "checkpoints", task.checkpoint_dir),
    ("ESTIBENCH_KERNELS", "kernels", native.kernel_dir),
])
def test_every_cache_follows_the_same_rule(monkeypatch, tmp_path, variable, name, of):
    for value in OFF + ("OFF", " Off "):
        monkeypatch.setenv(variable, value)
        assert cache_off(variable) and of() is None and cache_dir(variable, name) is None
    monkeypatch.setenv(variable, str(tmp_path / "chosen"))
    assert not cache_off(variable) and of() == tmp_path / "chosen"
    monkeypatch.delenv(variable)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert not cache_off(variable) and of() == tmp_path / "estibench" / name


def test_replacing_writes_all_or_nothing(tmp_path):
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with replacing(target) as partial:
            partial.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]
    with replacing(target) as partial:
        partial.write_bytes(b"new")
        assert target.read_bytes() == b"old"  # not visible before the end
    assert target.read_bytes() == b"new" and list(tmp_path.iterdir()) == [target]
