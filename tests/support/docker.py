"""A fake `docker` executable for tests: records its argv and plays the engine without one.

`docker run` honours the --mount specs it is given (read-only ones cannot be written, a missing source is an
error), so a test passes only when the command line mounts what the tool reads and writes.
Behaviour knobs (environment): FAKE_DOCKER_ENGINE=down, FAKE_DOCKER_IMAGE=present|missing,
FAKE_DOCKER_FAIL=convert|quantize|build, FAKE_DOCKER_COMPOSE=missing.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

FAKE_DOCKER = r'''
import json, os, sys
from pathlib import Path

argv = sys.argv[1:]
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(argv) + "\n")
env = os.environ.get

def die(message, code=1):
    print(message, file=sys.stderr)
    sys.exit(code)

if argv[:1] == ["info"]:
    if env("FAKE_DOCKER_ENGINE") == "down":
        die("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?")
    print("28.2.2")
elif argv[:2] == ["compose", "version"]:
    if env("FAKE_DOCKER_COMPOSE") == "missing":
        die("docker: unknown command: docker compose")
    print("2.40.3")
elif argv[:1] == ["compose"]:
    print("compose " + " ".join(argv[1:]))
elif argv[:2] == ["image", "inspect"]:
    sys.exit(0 if env("FAKE_DOCKER_IMAGE", "present") == "present" else 1)
elif argv[:1] == ["build"]:
    if env("FAKE_DOCKER_FAIL") == "build":
        die("ERROR: failed to solve: process did not complete successfully")
    print("built")
elif argv[:1] == ["run"]:
    mounts, i = {}, 1
    while argv[i].startswith("--"):
        if argv[i] == "--mount":
            spec = dict(p.split("=", 1) if "=" in p else (p, True) for p in argv[i + 1].split(","))
            if spec.get("type") != "bind" or not Path(spec["source"]).is_dir():
                die(f"docker: Error response from daemon: invalid mount config: {argv[i + 1]}", 125)
            mounts[spec["target"]] = (Path(spec["source"]), "readonly" in spec)
            i += 2
        elif argv[i] in ("--rm",):
            i += 1
        else:
            i += 2
    image, command, args = argv[i], argv[i + 1], argv[i + 2:]

    def host(path, write=False):
        for target, (source, read_only) in mounts.items():
            if path.startswith(target + "/") or path == target:
                if write and read_only:
                    die(f"OSError: [Errno 30] Read-only file system: {path!r}")
                return source / path[len(target):].lstrip("/")
        die(f"FileNotFoundError: {path!r} is not inside any mount")

    if command == "convert":
        model, out = host(args[0]), host(args[args.index("--outfile") + 1], write=True)
        if not (model / "config.json").is_file():
            die(f"FileNotFoundError: {model}/config.json")
        out.write_text("GGUF f16 of " + (model / "config.json").read_text())
        if env("FAKE_DOCKER_FAIL") == "convert":
            die("RuntimeError: convert blew up")
    elif command == "quantize":
        src, out = host(args[0]), host(args[1], write=True)
        out.write_text(args[2] + " of " + src.read_text())
        if env("FAKE_DOCKER_FAIL") == "quantize":
            die("main: failed to quantize model")
    else:
        die(f"unknown entry point {command}", 2)
else:
    die(f"fake docker: unexpected {argv}", 64)
'''


@dataclass
class FakeDocker:
    bin_dir: Path
    log: Path

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def runs(self) -> list[list[str]]:
        return [c for c in self.calls() if c[:1] == ["run"]]

    def env(self, **knobs: str) -> dict[str, str]:
        """Environment for a subprocess that should find this fake first on PATH."""
        return {"PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "FAKE_DOCKER_LOG": str(self.log), **knobs}


@pytest.fixture
def fake_docker(tmp_path, monkeypatch) -> FakeDocker:
    """Put the fake first on PATH of this process (and of subprocesses given fake.env())."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    script = bin_dir / "docker"
    script.write_text(f"#!{sys.executable}\n{FAKE_DOCKER}")
    script.chmod(0o755)
    fake = FakeDocker(bin_dir, tmp_path / "docker-calls.jsonl")
    for key, value in fake.env().items():
        monkeypatch.setenv(key, value)
    return fake
