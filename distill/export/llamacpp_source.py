"""The one llama.cpp pin: the llama.cpp source vendored in the installed llama-cpp-python's sdist.

llama-cpp-python (the runtime: route, evaluate, quantize) is built from `vendor/llama.cpp` of its sdist, so
that source tree is, by construction, the llama.cpp the rest of the toolchain must match: its
`convert_hf_to_gguf.py` writes our GGUFs, its vocab test files prove our tokenizers, and the Docker image
(`docker/llamacpp`) compiles `llama-quantize`/`llama-server` from it. No git clone of another version.

Stable API (the Docker build uses `sdist_path()` as its build-context input; keep these names):

    pinned_version() -> str      llama-cpp-python's installed version (importlib.metadata), e.g. "0.3.36"
    (cache: distill.fileio.cache_dir(): $DISTILL_CACHE, default ~/.cache/droidhead)
    sdist_path() -> Path         <cache>/sdist/llama_cpp_python-<v>.tar.gz (pip download, once)
    source_dir() -> Path         <cache>/llama.cpp-<v>/: vendor/llama.cpp unpacked (see KEEP_OUT for what is not)
    converter_script() -> Path   <source>/convert_hf_to_gguf.py
    gguf_py_dir() -> Path        <source>/gguf-py (the converter's own gguf package: PYTHONPATH for it)
    vocab_dir() -> Path          <source>/models: ggml-vocab-<name>.gguf + .inp/.out tokenizer test vectors
    templates_dir() -> Path      <source>/models/templates: public chat templates llama.cpp tests with
    llama_cpp_commit() -> str    the llama.cpp commit the sdist vendors (for image labels / build info)

    python -m distill.export.llamacpp_source [sdist|source|converter|vocab|commit|version]   prints it

Fetching: `pip download --no-deps --no-binary :all: llama-cpp-python==<v>` (pip's own index, proxy and CA
settings apply; pip checks the index's sha256). Measured here: 76.6 MB, 1 min 47 s (most of it pip preparing
the sdist's metadata in an isolated build env), once per version. Unpacking is all-or-nothing: into a temp dir
beside the target, renamed into place when complete, so an interrupted run leaves nothing half-unpacked and
two processes racing both end with the same complete tree. Offline with nothing cached: one error line that
says what to do.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from ..errors import cli, fail
from ..fileio import cache_dir

PACKAGE = "llama-cpp-python"
VENDOR_PREFIX = "vendor/llama.cpp/"
# Left out of the unpacked tree: documentation and media (40 MB), CI configs, and the submodule's `.git` file
# (it points at a gitdir that is not there; git and CMake's build-info would trip over it).
KEEP_OUT = ("docs/", "media/", "benches/", ".github/", ".git")
STAMP = ".droidhead-source.json"


# ---- where things are ------------------------------------------------------------------------------------
def pinned_version() -> str:
    """The installed llama-cpp-python's version: the pin for the converter, quantizer and container too."""
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        fail(PACKAGE, "not installed: run `make setup` (it pins the llama.cpp the toolchain uses)")


def sdist_name(version: str) -> str:
    return f"llama_cpp_python-{version}.tar.gz"


def sdist_path(version: str | None = None) -> Path:
    """The sdist tarball of `version` (default: the installed one), downloaded into the cache once."""
    version = version or pinned_version()
    path = cache_dir("sdist", sdist_name(version))
    if not path.is_file():
        _download_sdist(version, path)
    return path


def source_dir(version: str | None = None) -> Path:
    """vendor/llama.cpp of the sdist, unpacked once into the cache (atomically)."""
    version = version or pinned_version()
    target = cache_dir(f"llama.cpp-{version}")
    if not (target / STAMP).is_file():
        _unpack(sdist_path(version), target, version)
    return target


def converter_script(version: str | None = None) -> Path:
    return _existing(source_dir(version) / "convert_hf_to_gguf.py")


def gguf_py_dir(version: str | None = None) -> Path:
    return _existing(source_dir(version) / "gguf-py")


def vocab_dir(version: str | None = None) -> Path:
    return _existing(source_dir(version) / "models")


def templates_dir(version: str | None = None) -> Path:
    return _existing(source_dir(version) / "models" / "templates")


def vocab_gguf(name: str, version: str | None = None) -> Path:
    """models/ggml-vocab-<name>.gguf (llama-spm, llama-bpe, qwen2, qwen35, phi-3, gemma-4, ...)."""
    path = vocab_dir(version) / f"ggml-vocab-{name}.gguf"
    if not path.is_file():
        known = sorted(p.name.removeprefix("ggml-vocab-").removesuffix(".gguf") for p in path.parent.glob("ggml-vocab-*.gguf"))
        fail(path, f"no such vocab in llama.cpp {version or pinned_version()}; known: {', '.join(known)}")
    return path


def llama_cpp_commit(version: str | None = None) -> str:
    return json.loads((source_dir(version) / STAMP).read_text())["llama_cpp_commit"]


def converter_env(version: str | None = None, env: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for running the converter: its own gguf-py first on PYTHONPATH (it may be newer than PyPI's)."""
    env = dict(os.environ if env is None else env)
    env.pop("NO_LOCAL_GGUF", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(gguf_py_dir(version)), env.get("PYTHONPATH")]))
    return env


def _existing(path: Path) -> Path:
    if not path.exists():
        fail(path, "missing from the unpacked llama.cpp source; delete the folder to unpack it again")
    return path


# ---- fetching and unpacking --------------------------------------------------------------------------------
def _download_sdist(version: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    requirement = f"{PACKAGE}=={version}"
    print(f"fetching the llama.cpp source: pip download {requirement} (76 MB, once)", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=path.parent) as tmp:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--dest", tmp,
             "--disable-pip-version-check", requirement],
            capture_output=True, text=True)
        got = Path(tmp) / path.name
        if done.returncode != 0 or not got.is_file():
            fail(path, f"cannot download the {requirement} sdist ({_pip_reason(done.stderr)}); connect to the package "
                       f"index once, or copy {path.name} to this path")
        os.replace(got, path)


def _pip_reason(stderr: str) -> str:
    """pip's one telling line: the first ERROR, else the last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or ["pip failed"])[0][:200]


def _unpack(sdist: Path, target: Path, version: str) -> None:
    """Extract vendor/llama.cpp (less KEEP_OUT) into a temp dir beside `target`, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with tarfile.open(sdist) as tar:
            members, top = _vendor_members(tar, sdist)
            for member in members:
                tar.extract(member, stage, **_safe_filter())
            commit = _submodule_commit(tar, top)
        (stage / STAMP).write_text(json.dumps(
            {"llama_cpp_python": version, "llama_cpp_commit": commit, "sdist": str(sdist)}, indent=1) + "\n")
        stage.chmod(0o755)
        try:
            os.rename(stage, target)
        except OSError:
            if not (target / STAMP).is_file():  # not a lost race: a stale, incomplete target
                shutil.rmtree(target, ignore_errors=True)
                os.rename(stage, target)
    except tarfile.TarError as err:
        fail(sdist, f"not a readable sdist ({err}); delete it to download again")
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _vendor_members(tar: tarfile.TarFile, sdist: Path) -> tuple[list[tarfile.TarInfo], str]:
    """Members under <top>/vendor/llama.cpp/, renamed relative to it, without KEEP_OUT."""
    names = tar.getnames()
    top = names[0].split("/", 1)[0] if names else ""
    prefix = f"{top}/{VENDOR_PREFIX}"
    members = []
    for member in tar.getmembers():
        if not member.name.startswith(prefix) or not (member.isfile() or member.isdir()):
            continue
        relative = member.name[len(prefix):]
        if not relative or relative.startswith(KEEP_OUT) or relative == ".git":
            continue
        member.name = relative
        members.append(member)
    if not any(m.name == "convert_hf_to_gguf.py" for m in members):
        fail(sdist, f"no {VENDOR_PREFIX}convert_hf_to_gguf.py inside: not a llama-cpp-python sdist with llama.cpp vendored")
    return members, top


def _submodule_commit(tar: tarfile.TarFile, top: str) -> str:
    """The vendored llama.cpp commit, from the sdist's .git/modules/vendor/llama.cpp/HEAD."""
    with contextlib.suppress(KeyError, AttributeError):
        return tar.extractfile(f"{top}/.git/modules/vendor/llama.cpp/HEAD").read().decode().strip()
    return "unknown"


def _safe_filter() -> dict:
    """tarfile's 'data' filter where this Python has it (no absolute paths, links out, device files)."""
    return {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


# ---- CLI ------------------------------------------------------------------------------------------------------
WHAT = {
    "sdist": lambda: sdist_path(),
    "source": lambda: source_dir(),
    "converter": lambda: converter_script(),
    "vocab": lambda: vocab_dir(),
    "commit": lambda: llama_cpp_commit(),
    "version": lambda: pinned_version(),
}


@cli
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m distill.export.llamacpp_source",
                                     description="Print (fetching once) where the pinned llama.cpp source is.")
    parser.add_argument("what", nargs="?", default="source", choices=sorted(WHAT))
    print(WHAT[parser.parse_args(argv).what]())


if __name__ == "__main__":
    main()
