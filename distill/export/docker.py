"""HF model dir -> f16 GGUF -> quantized GGUF with llama.cpp's own tools, run in the docker/llamacpp image.

The export stage calls `convert_with_docker()` (`tools/convert_to_gguf.py --runner docker`). Each step runs
`docker run` as the calling user with only the directories it needs bind-mounted, no network, and writes a
hidden partial file that is renamed into place once the tool succeeded: a failed run leaves nothing behind.

    python -m distill llamacpp-image check [--compose]
    python -m distill llamacpp-image build
    python -m distill llamacpp-image convert --hf models/router_merged --f16 gguf/r.f16.gguf --out gguf/r.gguf
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import subprocess
import sys
from collections import deque
from pathlib import Path

import gguf

from ..errors import cli, fail

# The one place the llama.cpp release is pinned (the Dockerfile's ARG default mirrors it; a test checks).
LLAMA_CPP_TAG = "b11176"
IMAGE = f"droidhead/llamacpp:{LLAMA_CPP_TAG}"
DOCKERFILE_DIR = Path(__file__).resolve().parents[2] / "docker" / "llamacpp"
DEFAULT_QUANT = "Q4_K_M"
# Every file type llama-quantize knows, by the names it takes on its command line (Q4_K_M, Q8_0, F16, ...).
QUANT_TYPES = tuple(t.name.removeprefix("MOSTLY_") for t in gguf.LlamaFileType if t.name.startswith("MOSTLY_"))

IN, OUT = "/in", "/out"  # where the container sees its input and output directories


# ---- the docker client and engine ---------------------------------------------------------------------
def docker_executable() -> str:
    exe = shutil.which("docker")
    if not exe:
        fail("docker", "client not found on PATH: install Docker (Docker Desktop on macOS) or convert without --runner docker")
    return exe


def require_docker() -> str:
    """The engine's version; fails with one line when the client is missing or `docker info` fails."""
    try:
        done = subprocess.run(
            [docker_executable(), "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        fail("docker", "engine not answering (`docker info` timed out after 60 s)")
    if done.returncode != 0:
        reason = _last_line(done.stderr) or f"exit {done.returncode}"
        fail("docker", f"engine not reachable (`docker info` failed: {reason}); start Docker Desktop or the docker service")
    return done.stdout.strip()


def require_compose() -> str:
    """`docker compose` (the v2 plugin) must be there for the teacher."""
    done = subprocess.run([docker_executable(), "compose", "version", "--short"], capture_output=True, text=True)
    if done.returncode != 0:
        reason = _last_line(done.stderr) or f"exit {done.returncode}"
        fail("docker compose", f"plugin missing ({reason}); install Docker Compose v2")
    return done.stdout.strip()


def image_exists(image: str = IMAGE) -> bool:
    done = subprocess.run([docker_executable(), "image", "inspect", image], capture_output=True, text=True)
    return done.returncode == 0


# ---- command lines --------------------------------------------------------------------------------------
def build_command(image: str = IMAGE, tag: str = LLAMA_CPP_TAG, context: Path = DOCKERFILE_DIR) -> list[str]:
    return ["docker", "build", "--build-arg", f"LLAMA_CPP_TAG={tag}", "--tag", image, str(context)]


def convert_command(hf_dir: Path, f16_out: Path, image: str = IMAGE) -> list[str]:
    """convert_hf_to_gguf.py: `hf_dir` read-only on /in, the f16 file written into its own directory on /out."""
    hf_dir, f16_out = _absolute(hf_dir), _absolute(f16_out)
    mounts = _mount(hf_dir, IN, read_only=True) + _mount(f16_out.parent, OUT)
    return _run_prefix(mounts) + [image, "convert", IN, "--outfile", f"{OUT}/{f16_out.name}", "--outtype", "f16"]


def quantize_command(f16_in: Path, quant_out: Path, quant: str = DEFAULT_QUANT, image: str = IMAGE,
                     threads: int | None = None) -> list[str]:
    """llama-quantize: the f16 file's directory read-only on /in, the quantized file's directory on /out."""
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
    if "," in str(source):
        fail(source, "path contains a comma, which `docker run --mount` cannot express; move or rename it")
    spec = f"type=bind,source={source},target={target}" + (",readonly" if read_only else "")
    return ["--mount", spec]


def _absolute(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


# ---- running them -------------------------------------------------------------------------------------
def build_image(image: str = IMAGE, tag: str = LLAMA_CPP_TAG) -> None:
    require_docker()
    _build(image, tag)


def _build(image: str, tag: str = LLAMA_CPP_TAG) -> None:
    print(f"building {image} (llama.cpp {tag}; downloads the source and CPU torch, takes a while)", file=sys.stderr)
    _run(build_command(image, tag), "docker build")


def convert_with_docker(hf_dir: str | Path, f16_out: str | Path, quant_out: str | Path,
                        quant: str = DEFAULT_QUANT, *, image: str = IMAGE, build: bool = True,
                        threads: int | None = None) -> tuple[Path, Path]:
    """Convert `hf_dir` to an f16 GGUF at `f16_out`, then quantize that to `quant` at `quant_out`.

    Builds the image first when it is missing (unless build=False). Returns (f16_out, quant_out).
    Raises DistillError with one line naming the problem (docker missing, bad input, a tool failing).
    """
    hf_dir, f16_out, quant_out = _absolute(hf_dir), _absolute(f16_out), _absolute(quant_out)
    quant = check_quant(quant)
    if not (hf_dir / "config.json").is_file():
        fail(hf_dir, "not a Hugging Face model directory (no config.json)")
    if f16_out == quant_out:
        fail(quant_out, "the quantized output must differ from the f16 output")
    require_docker()
    if not image_exists(image):
        if not build:
            fail("docker", f"image {image} not found; build it with `make llamacpp-image`")
        _build(image)
    for path in (f16_out, quant_out):
        path.parent.mkdir(parents=True, exist_ok=True)
    convert, quantize = plan(hf_dir, f16_out, quant_out, quant, image, threads)
    with _partial(f16_out):
        _run(convert, "convert_hf_to_gguf.py")
    with _partial(quant_out):
        _run(quantize, "llama-quantize")
    return f16_out, quant_out


def plan(hf_dir: str | Path, f16_out: str | Path, quant_out: str | Path, quant: str = DEFAULT_QUANT,
         image: str = IMAGE, threads: int | None = None) -> list[list[str]]:
    """The two `docker run` command lines convert_with_docker() runs; each writes a partial file first."""
    return [
        convert_command(hf_dir, partial_path(_absolute(f16_out)), image),
        quantize_command(f16_out, partial_path(_absolute(quant_out)), check_quant(quant), image, threads),
    ]


def check_quant(quant: str) -> str:
    name = quant.upper()
    if name not in QUANT_TYPES:
        fail("--quant", f"unknown type {quant!r} (llama-quantize knows: {', '.join(QUANT_TYPES)})")
    return name


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


def _run(command: list[str], what: str) -> None:
    """Run with the output passed through (long conversions show progress); fail with the last error line."""
    command = [docker_executable(), *command[1:]] if command[0] == "docker" else command
    tail: deque[str] = deque(maxlen=5)
    with subprocess.Popen(command, stdout=None, stderr=subprocess.PIPE, text=True, errors="replace") as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            sys.stderr.write(line)
            if line.strip():
                tail.append(line.strip())
    if proc.returncode != 0:
        fail(what, f"failed (exit {proc.returncode}): {tail[-1] if tail else 'no error output'}")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


# ---- CLI ----------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m distill llamacpp-image", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="fail with one line unless the docker client and engine work")
    check.add_argument("--compose", action="store_true", help="also require the `docker compose` plugin")
    sub.add_parser("build", help=f"build {IMAGE} from docker/llamacpp")
    convert = sub.add_parser("convert", help="HF dir -> f16 GGUF -> quantized GGUF")
    convert.add_argument("--hf", required=True, type=Path, help="merged Hugging Face model directory")
    convert.add_argument("--f16", required=True, type=Path, help="f16 GGUF to write")
    convert.add_argument("--out", required=True, type=Path, help="quantized GGUF to write")
    convert.add_argument("--quant", default=DEFAULT_QUANT, help=f"llama-quantize type (default {DEFAULT_QUANT})")
    convert.add_argument("--image", default=IMAGE)
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
        build_image()
    elif args.dry_run:
        for command in plan(args.hf, args.f16, args.out, args.quant, args.image):
            print(shlex.join(command))
    else:
        f16, out = convert_with_docker(args.hf, args.f16, args.out, args.quant, image=args.image, build=not args.no_build)
        print(f"wrote {f16} and {out}")


if __name__ == "__main__":
    main()
