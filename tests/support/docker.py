"""A real Docker engine for the tests marked `docker`, and the llama.cpp images built once per session.

Where no engine can run (macOS without Docker Desktop, a user without root), the docker tests skip with the
reason; CI sets DISTILL_REQUIRE_DOCKER=1 (.ci/run), which turns that skip into a failure, after
`make docker-engine` started one.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

BUILD_TIMES: dict[str, float] = {}  # what the session's image build took, for the report at the end


def engine_problem() -> str | None:
    """Why the docker tests cannot run here, or None."""
    docker = shutil.which("docker")
    if not docker:
        return "no docker client on PATH (make docker-engine on Debian as root, Docker Desktop elsewhere)"
    try:
        done = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                              timeout=30)
    except subprocess.TimeoutExpired:
        return "`docker info` timed out"
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return f"no Docker engine answers ({lines[-1] if lines else 'docker info failed'}); make docker-engine starts one"
    return None


def skip_or_fail(reason: str) -> None:
    if os.environ.get("DISTILL_REQUIRE_DOCKER") == "1":
        pytest.fail(f"DISTILL_REQUIRE_DOCKER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """The engine's version; skips (or fails under DISTILL_REQUIRE_DOCKER=1) when there is none."""
    problem = engine_problem()
    if problem:
        skip_or_fail(problem)
    done = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    return done.stdout.strip()


@pytest.fixture(scope="session")
def llamacpp_images(docker_engine) -> dict[str, str]:
    """Both llama.cpp images, built (or found current) once per session through `make llamacpp-image`'s code.

    Both in one build: the shared compile stage runs once; a second call is a recipe-label check only."""
    from distill.export.docker import build_images, image_for

    if not _compose_available():
        skip_or_fail("no Docker Compose v2 (the images are built with it)")
    started = time.monotonic()
    images = build_images()
    BUILD_TIMES["llamacpp images (build or recipe check)"] = time.monotonic() - started
    assert images == {"convert": image_for("convert"), "server": image_for("server")}
    return images


def _compose_available() -> bool:
    from distill.errors import DistillError
    from distill.export.docker import compose_command

    try:
        compose_command()
    except DistillError:
        return False
    return True


def non_loopback_address() -> str | None:
    """This machine's address on its outgoing interface (a UDP connect sends nothing), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the route, nothing is sent
        except OSError:
            return None
        address = sock.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def reachable(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def world_readable_copy(source: Path, folder: Path) -> Path:
    """A copy of `source` in `folder`, both readable by the server's unprivileged user (a copy, not a link: the
    mode change must not reach the original)."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    target = folder / source.name
    shutil.copyfile(source, target)
    target.chmod(0o644)
    return target


# ---- comparing the GGUFs of two runners -------------------------------------------------------------------
def gguf_contents(path: Path) -> tuple[dict, dict]:
    """(metadata key -> value, tensor name -> (type, shape, bytes))."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    meta = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        try:
            meta[name] = field.contents()
        except Exception:  # noqa: BLE001 (array of structs: compare the raw parts)
            meta[name] = [bytes(part) for part in field.parts]
    tensors = {t.name: (t.tensor_type.name, tuple(int(d) for d in t.shape), np.asarray(t.data).tobytes())
               for t in reader.tensors}
    return meta, tensors


def assert_same_gguf(docker: Path, native: Path) -> None:
    """Same llama.cpp (one sdist), same torch and gguf-py: the same bytes. When not, say what differs: tensor
    names/order, types/shapes, metadata keys, tensor data."""
    if docker.read_bytes() == native.read_bytes():
        return
    (meta_d, tensors_d), (meta_n, tensors_n) = gguf_contents(docker), gguf_contents(native)
    assert list(tensors_d) == list(tensors_n), "tensor names or order differ"
    types = {n: (t[0], t[1]) for n, t in tensors_d.items() if (t[0], t[1]) != tensors_n[n][:2]}
    assert not types, f"tensor types/shapes differ: {dict(list(types.items())[:5])}"
    changed = sorted(k for k in meta_d.keys() | meta_n.keys() if meta_d.get(k) != meta_n.get(k))
    assert not changed, f"metadata differs: {changed}"
    different = [n for n in tensors_d if tensors_d[n][2] != tensors_n[n][2]]
    pytest.fail(f"same names, types and metadata, but {len(different)} tensors differ in bytes, e.g. {different[:3]}")
