"""GGUF export in the real llama.cpp image (a Docker engine, the image built from the pin in this session):
the seed's `tools/convert_to_gguf.py --runner docker` against the native runner on the demo's student and a
non-llama family, a failing container, and what the container may touch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.docker import assert_same_gguf

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def convert(cli, model: Path, out: Path, runner: str) -> subprocess.CompletedProcess:
    done = cli(sys.executable, "tools/convert_to_gguf.py", "--in", model, "--out", out, "--runner", runner, timeout=1800)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    return done


def run_both(cli, model: Path, tmp_path: Path) -> tuple[Path, Path]:
    native, docker = tmp_path / "native" / "m.gguf", tmp_path / "docker" / "m.gguf"
    convert(cli, model, native, "native")
    convert(cli, model, docker, "docker")
    for out in (native, docker):
        assert sorted(p.name for p in out.parent.iterdir()) == ["m.f16.gguf", "m.gguf", "m.gguf.sha256"]
    return docker, native


def test_demo_student_in_docker_equals_native(llamacpp_images, cli, merged_student, tmp_path):
    docker, native = run_both(cli, merged_student, tmp_path)
    assert_same_gguf(docker.with_name("m.f16.gguf"), native.with_name("m.f16.gguf"))
    assert_same_gguf(docker, native)
    assert docker.stat().st_uid == os.getuid()  # as the calling user (ownership proven for a non-root uid below)


def test_non_llama_family_in_docker_equals_native(llamacpp_images, cli, family_replica, tmp_path):
    docker, native = run_both(cli, family_replica, tmp_path)
    from gguf import GGUFReader

    assert GGUFReader(str(docker)).fields["general.architecture"].contents() == "qwen2"
    assert_same_gguf(docker.with_name("m.f16.gguf"), native.with_name("m.f16.gguf"))
    assert_same_gguf(docker, native)


@pytest.fixture(scope="module")
def family_replica() -> Path:
    """Issue 14's Qwen2.5-0.5B-Instruct replica (qwen2: attention biases, ChatML, Qwen's tokenizer proven on
    llama.cpp's reference vectors), cached and shared with tests/test_families.py."""
    from distill.bases.replicas import ensure_replica

    return ensure_replica("qwen2.5")


def test_a_tokenizer_saved_by_the_projects_transformers_converts_the_same(llamacpp_images, cli, tiny_llama_dir,
                                                                          tmp_path):
    """transformers 5 saves `tokenizer_class: TokenizersBackend` (merge does, so every merged student has it);
    llama.cpp's own requirement, transformers 4.57.6, cannot load that class (measured): the image must carry the
    project's transformers, and then writes the native runner's bytes."""
    import json
    import shutil

    from transformers import AutoTokenizer

    model = tmp_path / "resaved"
    shutil.copytree(tiny_llama_dir, model)
    AutoTokenizer.from_pretrained(model).save_pretrained(model)
    assert json.loads((model / "tokenizer_config.json").read_text())["tokenizer_class"] == "TokenizersBackend"
    docker, native = run_both(cli, model, tmp_path)
    assert_same_gguf(docker.with_name("m.f16.gguf"), native.with_name("m.f16.gguf"))
    assert_same_gguf(docker, native)


def test_failing_container_is_one_error_line_and_leaves_no_gguf(llamacpp_images, cli, tiny_llama_dir, tmp_path):
    """A model the converter rejects inside the container (an architecture llama.cpp does not know)."""
    import json
    import shutil

    model = tmp_path / "odd_model"
    shutil.copytree(tiny_llama_dir, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "architectures": ["FrobnicatorForCausalLM"]}))
    out = tmp_path / "gguf" / "odd.gguf"
    done = cli(sys.executable, "tools/convert_to_gguf.py", "--in", model, "--out", out, "--runner", "docker")
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: convert_hf_to_gguf.py (in docker): failed (exit 1): ") and \
        "FrobnicatorForCausalLM" in lines[0], lines[0]
    assert sorted(p.name for p in out.parent.iterdir()) == []  # no f16, no partial, no checksum


def test_the_model_dir_is_read_only_and_the_network_off_in_the_container(llamacpp_images, tiny_llama_dir, tmp_path,
                                                                         monkeypatch):
    """What convert_command() gives the container: the model read-only, no network, the output folder writable,
    files owned by the caller (a uid other than root's here, so ownership proves the --user mapping)."""
    from distill.export.docker import convert_command

    monkeypatch.setattr(os, "getuid", lambda: 4321)
    monkeypatch.setattr(os, "getgid", lambda: 4321)
    out = tmp_path / "out"
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    command = convert_command(tiny_llama_dir, out / "x.gguf", llamacpp_images["convert"], "x")
    image_at = command.index(llamacpp_images["convert"])
    probe = (f"touch /in/{tiny_llama_dir.name}/x 2>&1; "
             "python3 -c 'import socket; socket.create_connection((\"pypi.org\", 443), 3)' 2>/dev/null "
             "&& echo NET-OPEN || echo NET-CLOSED; touch /out/ok && echo WROTE")
    done = subprocess.run(["docker", *command[1:image_at], "--entrypoint", "sh", command[image_at], "-c", probe],
                          capture_output=True, text=True, timeout=120)
    assert "Read-only file system" in done.stdout, done.stdout + done.stderr
    assert done.stdout.split()[-2:] == ["NET-CLOSED", "WROTE"], done.stdout
    assert ((out / "ok").stat().st_uid, (out / "ok").stat().st_gid) == (4321, 4321)


def test_the_extra_ca_never_reaches_an_image(llamacpp_images):
    """The build ran with the host's CA bundle as a secret (PIP_CERT here): no layer, no history entry has it."""
    for image in llamacpp_images.values():
        history = subprocess.run(["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", image],
                                 capture_output=True, text=True, check=True).stdout
        assert "BEGIN CERTIFICATE" not in history and "ca-bundle.pem" not in history.replace("rm -f /tmp/ca-bundle.pem", "")
        found = subprocess.run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c",
                                "ls /run/secrets /tmp/ca-bundle.pem 2>&1; true"], capture_output=True, text=True)
        assert "No such file" in found.stdout and found.stdout.count("No such file") == 2, found.stdout
