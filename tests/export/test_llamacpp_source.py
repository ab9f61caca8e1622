"""distill.export.llamacpp_source: the one llama.cpp pin, fetched once, unpacked all-or-nothing (no network: a
fake sdist in a temp cache; the offline case runs pip against no index at all)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from distill.errors import DistillError
from distill.export import llamacpp_source as src

VERSION = "9.9.9"
COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"


def fake_sdist(path: Path, version: str = VERSION) -> Path:
    """The layout of llama-cpp-python's sdist, in miniature."""
    top = f"llama_cpp_python-{version}"
    files = {
        f"{top}/pyproject.toml": "[project]\n",
        f"{top}/.git/modules/vendor/llama.cpp/HEAD": COMMIT + "\n",
        f"{top}/vendor/llama.cpp/.git": "gitdir: ../../.git/modules/vendor/llama.cpp\n",
        f"{top}/vendor/llama.cpp/convert_hf_to_gguf.py": "print('converter')\n",
        f"{top}/vendor/llama.cpp/conversion/__init__.py": "",
        f"{top}/vendor/llama.cpp/gguf-py/gguf/__init__.py": "",
        f"{top}/vendor/llama.cpp/CMakeLists.txt": "project(llama.cpp)\n",
        f"{top}/vendor/llama.cpp/tools/quantize/quantize.cpp": "int main() {}\n",
        f"{top}/vendor/llama.cpp/models/ggml-vocab-qwen2.gguf": "GGUF",
        f"{top}/vendor/llama.cpp/models/ggml-vocab-qwen2.gguf.inp": "a\n__ggml_vocab_test__\n",
        f"{top}/vendor/llama.cpp/models/ggml-vocab-qwen2.gguf.out": " 64\n",
        f"{top}/vendor/llama.cpp/models/templates/Qwen-Qwen3-0.6B.jinja": "{{ x }}",
        f"{top}/vendor/llama.cpp/docs/build.md": "docs\n",
        f"{top}/vendor/llama.cpp/media/logo.png": "png",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_pin_is_the_installed_llama_cpp_python():
    import importlib.metadata

    assert src.pinned_version() == importlib.metadata.version("llama-cpp-python")


def test_unpacks_vendored_llama_cpp_once_without_docs_or_git_link(cache):
    fake_sdist(cache / "sdist" / src.sdist_name(VERSION))
    root = src.source_dir(VERSION)
    assert root == cache / f"llama.cpp-{VERSION}"
    assert src.converter_script(VERSION).read_text() == "print('converter')\n"
    assert (src.gguf_py_dir(VERSION) / "gguf" / "__init__.py").is_file()
    assert (root / "tools" / "quantize" / "quantize.cpp").is_file()  # the Docker build compiles from here
    assert src.vocab_gguf("qwen2", VERSION).read_text() == "GGUF"
    assert (src.templates_dir(VERSION) / "Qwen-Qwen3-0.6B.jinja").is_file()
    assert not (root / "docs").exists() and not (root / "media").exists()
    assert not (root / ".git").exists(), "the submodule's .git link points nowhere once unpacked"
    assert src.llama_cpp_commit(VERSION) == COMMIT
    stamp = (root / src.STAMP).stat().st_mtime_ns
    assert src.source_dir(VERSION) == root and (root / src.STAMP).stat().st_mtime_ns == stamp, "unpacked twice"
    assert [p.name for p in cache.iterdir() if p.name.startswith(".")] == []


def test_interrupted_unpack_leaves_nothing(cache, monkeypatch):
    fake_sdist(cache / "sdist" / src.sdist_name(VERSION))
    calls = []

    def extract(self, member, path="", **kwargs):
        calls.append(member.name)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, member, path, **kwargs)

    original = tarfile.TarFile.extract
    monkeypatch.setattr(tarfile.TarFile, "extract", extract)
    with pytest.raises(KeyboardInterrupt):
        src.source_dir(VERSION)
    assert sorted(p.name for p in cache.iterdir()) == ["sdist"], "a half-unpacked tree or temp dir was left"
    monkeypatch.setattr(tarfile.TarFile, "extract", original)
    assert src.converter_script(VERSION).is_file()  # the next call unpacks it whole


def test_a_tarball_without_llama_cpp_is_refused(cache):
    path = cache / "sdist" / src.sdist_name(VERSION)
    path.parent.mkdir(parents=True)
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(f"llama_cpp_python-{VERSION}/README.md")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(DistillError, match="convert_hf_to_gguf.py inside"):
        src.source_dir(VERSION)
    assert not (cache / f"llama.cpp-{VERSION}").exists()


def test_unknown_vocab_names_the_known_ones(cache):
    fake_sdist(cache / "sdist" / src.sdist_name(VERSION))
    with pytest.raises(DistillError, match="known: qwen2"):
        src.vocab_gguf("gemma-3", VERSION)


def test_offline_without_the_sdist_is_one_clear_error(cache, monkeypatch):
    # pip with no index and no local wheels: what a machine without network sees.
    for key in list(os.environ):
        if key.startswith("PIP_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    with pytest.raises(DistillError) as err:
        src.sdist_path(VERSION)
    message = str(err.value)
    assert "cannot download the llama-cpp-python==9.9.9 sdist" in message and "\n" not in message
    assert str(cache / "sdist" / src.sdist_name(VERSION)) in message, "the error says where to put the file"
    assert not any((cache / "sdist").iterdir()), "a partial download was left"


def test_cli_prints_the_converter_path(cache):
    fake_sdist(cache / "sdist" / src.sdist_name(src.pinned_version()))
    done = subprocess.run([sys.executable, "-m", "distill.export.llamacpp_source", "converter"], capture_output=True,
                          text=True, env={**os.environ, "DISTILL_CACHE": str(cache)}, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(cache / f"llama.cpp-{src.pinned_version()}" / "convert_hf_to_gguf.py")
