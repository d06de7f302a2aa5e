"""The kernel cache runs only the source fusegraph generated, stays private, and never stops a run."""

import os
import py_compile
import stat
import warnings

import pytest
import torch

import fusegraph as fg
from fusegraph.kernels import cache
from tests.conftest import single_layer


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    folder = tmp_path / "kernels"
    monkeypatch.setenv("FUSEGRAPH_CACHE", str(folder))
    monkeypatch.setattr(cache, "_FALLBACK", None)
    return folder


def test_a_new_cache_folder_is_private(private_cache):
    cache.store("probe", "x = 1\n")
    assert stat.S_IMODE(private_cache.stat().st_mode) == 0o700


def test_a_planted_bytecode_file_never_runs(private_cache):
    source = "ANSWER = 'generated'\n"
    path = cache.store("planted", source)
    evil = path.with_name("evil.py")
    evil.write_text("ANSWER = 'planted'\n")
    pycache = path.parent / "__pycache__"
    for tag in ("cpython-310", "cpython-311", "cpython-312", "cpython-313"):
        py_compile.compile(str(evil), cfile=str(pycache / f"{path.stem}.{tag}.pyc"))
    planted = {p: p.read_bytes() for p in pycache.iterdir()}
    assert cache.load("planted", source).ANSWER == "generated"
    assert {p: p.read_bytes() for p in pycache.iterdir()} == planted  # and no bytecode is written


def test_an_entry_edited_after_compile_does_not_run(private_cache):
    model = single_layer(fg.Activation("relu"), (4,))
    compiled = fg.compile(model)
    for path in private_cache.glob("*.py"):  # between compile and the first call, in the interpreter's re-read
        path.write_text(path.read_text().replace("< 0, 0.0,", "< 0, 7.0,"))
    x = torch.tensor([[-1.0, 2.0, -3.0, 4.0]])
    torch.testing.assert_close(compiled(x), torch.relu(x))


def test_a_folder_writable_by_others_is_refused(private_cache):
    private_cache.mkdir(mode=0o700)
    private_cache.chmod(0o777)
    with pytest.raises(fg.CacheError, match=r"\$FUSEGRAPH_CACHE=.*writable by other users"):
        fg.compile(single_layer(fg.Activation("tanh"), (4,)))


def test_a_folder_owned_by_another_user_is_refused(private_cache, monkeypatch):
    private_cache.mkdir(mode=0o700)
    monkeypatch.setattr(os, "getuid", lambda: private_cache.stat().st_uid + 1)
    with pytest.raises(fg.CacheError, match=r"\$FUSEGRAPH_CACHE=.*owned by another user"):
        cache.store("probe", "x = 1\n")


def _falls_back_once(private_cache, make_unwritable) -> None:
    make_unwritable()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = single_layer(fg.Dense(3, activation="sigmoid"), (4,))
        x = torch.randn(2, 4)
        torch.testing.assert_close(fg.compile(model, fuse=False)(x), model.to_torch()(x), rtol=1e-4, atol=1e-5)
    messages = [str(w.message) for w in caught if "kernel cache" in str(w.message)]
    assert len(messages) == 1 and "FUSEGRAPH_CACHE" in messages[0]
    assert cache._FALLBACK is not None and any(cache._FALLBACK.glob("*.py"))
    parent = private_cache.parent
    assert not list(parent.rglob("*.tmp")) and not list(cache._FALLBACK.glob("*.tmp"))


def test_a_file_where_the_folder_should_be_falls_back(private_cache):
    _falls_back_once(private_cache, lambda: private_cache.write_text("not a folder"))


def test_a_folder_at_an_entry_path_falls_back(private_cache):
    def block_entries():
        private_cache.mkdir(mode=0o700)
        model = single_layer(fg.Dense(3, activation="sigmoid"), (4,))
        for kernel in fg.compile(model, fuse=False).program.kernels:  # noqa: B007 (sources only)
            (cache.entry_path(kernel.kernel.name, kernel.kernel.source.source)).unlink()
            cache.entry_path(kernel.kernel.name, kernel.kernel.source.source).mkdir()

    _falls_back_once(private_cache, block_entries)


def test_a_read_only_folder_falls_back(private_cache, monkeypatch):
    private_cache.mkdir(mode=0o700)
    private_cache.chmod(0o500)
    if os.access(private_cache, os.W_OK):  # root writes anyway: make the rename fail as a read-only folder does
        real_replace = os.replace

        def refuse(source, target):
            if os.path.dirname(target) == str(private_cache):
                raise PermissionError(13, "Permission denied", target)
            real_replace(source, target)

        monkeypatch.setattr(cache.os, "replace", refuse)
    _falls_back_once(private_cache, lambda: None)
    monkeypatch.undo()
    private_cache.chmod(0o700)
