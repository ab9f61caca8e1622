"""The robot's Python packages, gathered on the controller: this checkout's wheel plus its core dependencies as
wheels for the robot's Python and CPU, so the robot installs them with `pip --no-index` (it may be offline).

    python -m distill wheelhouse --out build/wheelhouse/cp310-aarch64 --python-version 3.10 --machine aarch64 --glibc 2.35

The project wheel is built from a copy of the package sources (never in the checkout, where other builds run)
with a fixed SOURCE_DATE_EPOCH, so the same sources give the same bytes (the deploy's copy then changes
nothing) and its sha256 names the version the robot installs. Dependencies are `pip download`ed once per
(requirements, Python, CPU, glibc) and kept; a later run with the same key downloads nothing, so a deploy works
offline once the wheelhouse exists. Everything is also packed into one `bundle.tar` (sorted, fixed times and
owners: the same wheels give the same bytes), which is what the deploy copies: one file, not one task per wheel.
Prints one JSON object: {"dir", "wheel", "sha256", "bundle", "bundle_sha256", "downloaded", "files"}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import cli, fail
from ..fileio import read_json, sha256_file, write_json

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "distill")
FIXED_EPOCH = "315532800"  # 1980-01-01, the earliest date a zip can hold
MANIFEST = "manifest.json"


def platform_tags(machine: str, glibc: str) -> list[str]:
    """The manylinux tags a robot with this CPU and glibc accepts (oldest first), as pip computes them."""
    try:
        major, minor = (int(x) for x in glibc.split(".")[:2])
    except ValueError:
        fail("--glibc", f"{glibc!r}: expected MAJOR.MINOR, e.g. 2.35")
    if major != 2 or minor < 17:
        fail("--glibc", f"{glibc}: manylinux wheels need glibc 2.17 or later")
    return [f"manylinux2014_{machine}"] + [f"manylinux_2_{m}_{machine}" for m in range(17, minor + 1)]


def build_project_wheel(out: Path, source_root: Path = ROOT) -> Path:
    """The project's wheel, built from a clean copy of its sources (`source_root`: this checkout by default) with
    a fixed timestamp."""
    with tempfile.TemporaryDirectory(prefix="droidhead-wheel-") as scratch:
        src = Path(scratch) / "src"
        src.mkdir()
        for name in SOURCES:
            source = source_root / name
            if not source.exists():
                fail(source_root, f"no {name} here: not a checkout of this project", "--source")
            if source.is_dir():
                shutil.copytree(source, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(source, src / name)
        built = Path(scratch) / "wheel"
        env = {**os.environ, "SOURCE_DATE_EPOCH": FIXED_EPOCH, "PYTHONWARNINGS": "ignore"}
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                               "-w", str(built), str(src)], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            fail("pip wheel", f"building the project wheel failed: {_last_line(done.stderr)}")
        (wheel,) = built.glob("*.whl")
        target = out / wheel.name
        if not target.is_file() or sha256_file(target) != sha256_file(wheel):
            shutil.copyfile(wheel, target)
        return target


def download_dependencies(out: Path, wheel: Path, extras: list[str], python_version: str, platforms: list[str],
                          *, offline: bool = False) -> bool:
    """Wheels of the project's dependencies for the robot into `out`; False when the kept ones already match."""
    requirement = f"{wheel}[{','.join(extras)}]" if extras else str(wheel)
    key = hashlib.sha256(json.dumps({"requires": _requires(wheel), "extras": sorted(extras),
                                     "python": python_version, "platforms": platforms}).encode()).hexdigest()[:16]
    manifest = out / MANIFEST
    if manifest.is_file() and read_json(manifest).get("key") == key and all(
            (out / name).is_file() for name in read_json(manifest)["files"]):
        return False
    if offline:
        fail(out, "no wheelhouse for this robot yet and --offline: run the deploy once with network on the "
                  "controller (or `python -m distill wheelhouse`)")
    with tempfile.TemporaryDirectory(prefix="droidhead-deps-") as scratch:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--dest", scratch,
               "--python-version", python_version, "--implementation", "cp"]
        for tag in platforms:
            cmd += ["--platform", tag]
        done = subprocess.run([*cmd, requirement], capture_output=True, text=True)
        if done.returncode != 0:
            fail("pip download", f"the robot's dependency wheels could not be fetched: {_last_line(done.stderr)} "
                                 "(is the package index reachable from the controller?)")
        files = sorted(p.name for p in Path(scratch).glob("*.whl") if p.name != wheel.name)
        for stale in out.glob("*.whl"):
            if stale.name not in files and stale.name != wheel.name:
                stale.unlink()
        for name in files:
            shutil.copyfile(Path(scratch) / name, out / name)
    write_json(manifest, {"key": key, "python": python_version, "platforms": platforms, "extras": sorted(extras),
                          "files": files})
    return True


def write_bundle(out: Path, names: list[str]) -> Path:
    """`out/bundle.tar`: the named wheels, sorted, with fixed times and owners (same wheels, same bytes)."""
    import io
    import tarfile

    bundle = out / "bundle.tar"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in sorted(names):
            data = (out / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode, info.uid, info.gid = len(data), 0, 0o644, 0, 0
            tar.addfile(info, io.BytesIO(data))
    if not bundle.is_file() or bundle.read_bytes() != buffer.getvalue():
        tmp = bundle.with_name(f"bundle.tar.{os.getpid()}.tmp")
        tmp.write_bytes(buffer.getvalue())
        os.replace(tmp, bundle)
    return bundle


def _requires(wheel: Path) -> list[str]:
    """Requires-Dist lines of the wheel's metadata: what decides the dependency set."""
    import zipfile

    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(name).decode("utf-8")
    return sorted(line for line in text.splitlines() if line.startswith("Requires-Dist:"))


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def build(out: Path, *, python_version: str, machine: str, glibc: str, extras: list[str],
          offline: bool = False, source_root: Path = ROOT) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    wheel = build_project_wheel(out, source_root)
    downloaded = download_dependencies(out, wheel, extras, python_version, platform_tags(machine, glibc),
                                       offline=offline)
    files = sorted([wheel.name, *read_json(out / MANIFEST)["files"]])
    bundle = write_bundle(out, files)
    return {"dir": str(out), "wheel": wheel.name, "sha256": sha256_file(wheel), "bundle": str(bundle),
            "bundle_sha256": sha256_file(bundle), "downloaded": downloaded, "files": files}


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distill wheelhouse", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="wheelhouse directory (one per robot platform)")
    parser.add_argument("--python-version", required=True, help="the robot's Python, e.g. 3.10")
    parser.add_argument("--machine", required=True, help="the robot's CPU (uname -m), e.g. aarch64")
    parser.add_argument("--glibc", required=True, help="the robot's glibc, e.g. 2.35 (JetPack 6)")
    parser.add_argument("--extras", default="", help="comma-separated extras, e.g. llamacpp")
    parser.add_argument("--offline", action="store_true", help="never download; fail if the wheels are missing")
    parser.add_argument("--source", type=Path, default=ROOT, help="the checkout to build from (default: this one)")
    args = parser.parse_args(argv)
    extras = [e for e in args.extras.split(",") if e.strip()]
    print(json.dumps(build(args.out, python_version=args.python_version, machine=args.machine, glibc=args.glibc,
                           extras=extras, offline=args.offline, source_root=args.source)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
