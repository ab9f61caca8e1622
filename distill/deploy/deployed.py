"""The controller's record of which router student the robot runs: the reference `make deploy` must not regress.

    python -m distill deployed record --student models/router_student_mlx --gguf gguf/router-student.gguf
    python -m distill deployed rollback
    python -m distill deployed sync --state build/robot-state [--student S --gguf G]
    python -m distill deployed show

`make deploy` runs `record` after the play succeeded: the student dir's small files (adapters, student.json,
splits, the cached fixed-set evaluation) are copied to models/router_student_mlx.deployed/ with deployed.json
(GGUF version, time, fixed-set size and accuracy). fixed.jsonl, the fixed held-out set, is carried over
from the previous record, so it stays the first deployed student's test split across rounds; the first record
takes the student's own test.jsonl. The record it replaces moves to <dir>.previous, and `rollback` copies
that one back, as `make rollback` does on the robot (previous stays, so a second rollback changes nothing).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from ..errors import cli, fail
from ..fileio import read_json, read_jsonl, sha256_file, staged_dir, utc_now, write_json
from ..student import SPEC_FILES, is_student

DEFAULT_DIR = Path("models/router_student_mlx.deployed")
RECORD = "deployed.json"
FIXED = "fixed.jsonl"
STUDENT_FILES = (*SPEC_FILES, "adapters.safetensors", "adapter_config.json", "train.jsonl", "valid.jsonl",
                 "test.jsonl", "fixed_eval.json")


def previous_dir(dest: Path) -> Path:
    return dest.with_name(dest.name + ".previous")


def record(student: Path, gguf: Path, dest: Path = DEFAULT_DIR) -> dict:
    """Make `student` (shipped as `gguf`) the deployed reference; the old one becomes <dest>.previous."""
    from ..runtime.backends import gguf_version

    if not is_student(student):
        fail(student, "not a trained student (no student.json)", "--student")
    fixed_source = dest / FIXED if (dest / FIXED).is_file() else student / "test.jsonl"
    if not fixed_source.is_file():
        fail(student, "no test.jsonl to start the fixed held-out set from", "--student")
    with staged_dir(dest, previous=previous_dir(dest)) as staging:
        for name in STUDENT_FILES:
            if (student / name).is_file():
                shutil.copy2(student / name, staging / name)
        shutil.copy2(fixed_source, staging / FIXED)
        info = {
            "student": str(student),
            "gguf": str(gguf),
            "version": gguf_version(gguf) if gguf.is_file() else None,
            "deployed": utc_now(),
            "fixed_set": {"n": len(read_jsonl(staging / FIXED)), "sha256": sha256_file(staging / FIXED),
                          "from": str(fixed_source)},
            "fixed_metrics": cached_fixed_metrics(staging),
        }
        write_json(staging / RECORD, info)
    return info


def cached_fixed_metrics(folder: Path) -> dict | None:
    """skill_accuracy / args_exact on fixed.jsonl when eval-router or the gate measured them for these adapters."""
    from ..training.evaluate import FIXED_CACHE

    cache = folder / FIXED_CACHE
    if not cache.is_file():
        return None
    cached = read_json(cache)
    if cached.get("fixed_sha256") != sha256_file(folder / FIXED) or \
            cached.get("adapters_sha256") != sha256_file(folder / "adapters.safetensors"):
        return None
    return {k: cached["metrics"].get(k) for k in ("n", "skill_accuracy", "args_exact")}


def rollback(dest: Path = DEFAULT_DIR) -> dict:
    """Point the reference back at <dest>.previous (kept, like the robot's previous version)."""
    previous = previous_dir(dest)
    if not (previous / RECORD).is_file():
        fail(previous, "no previous deployed student recorded: nothing to roll back to")
    with staged_dir(dest) as staging:
        shutil.copytree(previous, staging, dirs_exist_ok=True)
    return read_json(dest / RECORD)


def version_sha(version: str | None) -> str | None:
    """The 12-hex-digit sha256 prefix in a record's version (`router-student.gguf@0123456789ab`), or None."""
    tail = (version or "").rpartition("@")[2]
    return tail if len(tail) == 12 and all(c in "0123456789abcdef" for c in tail) else None


def robot_version(state_dir: Path, model: str = "router") -> str:
    """The router version the robot(s) serve, from ansible/state.yml's <host>.json files (one version for all)."""
    files = sorted(state_dir.glob("*.json")) if state_dir.is_dir() else []
    if not files:
        fail(state_dir, "no robot state here (ansible/state.yml writes <host>.json): cannot tell what the robot runs")
    versions = {f.stem: read_json(f).get(model) for f in files}
    if not all(versions.values()) or len(set(versions.values())) != 1:
        fail(state_dir, f"the robots do not serve one {model} version: {versions}")
    return next(iter(versions.values()))


def sync(dest: Path, robot: str, student: Path | None = None, gguf: Path | None = None) -> str:
    """Make the controller's record say what the robot runs (after a deploy or rollback play, whatever its outcome).

    The robot serves `robot` (sha256[:12] of the GGUF). In step already: nothing. The previous record: roll the
    record back. The GGUF just deployed (`gguf`): record `student` as deployed. Anything else: fail, naming all three.
    """
    from ..runtime.backends import gguf_version

    current = read_json(dest / RECORD) if (dest / RECORD).is_file() else {}
    previous = read_json(previous_dir(dest) / RECORD) if (previous_dir(dest) / RECORD).is_file() else {}
    if version_sha(current.get("version")) == robot:
        return f"{dest}: in step with the robot ({robot})"
    if previous and version_sha(previous.get("version")) == robot:
        rollback(dest)
        return f"{dest}: back to {previous.get('version')}, which the robot serves"
    if student is not None and gguf is not None and gguf.is_file() and version_sha(gguf_version(gguf)) == robot:
        info = record(student, gguf, dest)
        return f"{dest}: recorded {info['version']}, which the robot serves"
    fail(dest, f"the robot serves {robot}, the record says {current.get('version')} (previous "
               f"{previous.get('version')}): deploy again (make deploy) to bring them in step")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m distill deployed", description=__doc__.split("\n\n")[0])
    verbs = p.add_subparsers(dest="verb", required=True)
    r = verbs.add_parser("record", help="record the student just deployed")
    r.add_argument("--student", type=Path, required=True)
    r.add_argument("--gguf", type=Path, required=True)
    y = verbs.add_parser("sync", help="make the record say what the robot runs (ansible/state.yml's output)")
    y.add_argument("--state", type=Path, required=True, help="directory of <host>.json files from ansible/state.yml")
    y.add_argument("--student", type=Path, help="the student just deployed (recorded when the robot serves --gguf)")
    y.add_argument("--gguf", type=Path, help="the GGUF just deployed")
    for verb in (r, y, verbs.add_parser("rollback", help="the previous record becomes the deployed one"),
                 verbs.add_parser("show", help="print deployed.json")):
        verb.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"the record (default {DEFAULT_DIR})")
    return p


@cli
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.verb == "record":
        info = record(args.student, args.gguf, args.dir)
        print(f"{args.dir}: deployed {info['version']} from {args.student}; fixed set {info['fixed_set']['n']} records")
    elif args.verb == "sync":
        print(sync(args.dir, robot_version(args.state), args.student, args.gguf))
    elif args.verb == "rollback":
        info = rollback(args.dir)
        print(f"{args.dir}: back to {info['version']} (deployed {info['deployed']})")
    else:
        if not (args.dir / RECORD).is_file():
            fail(args.dir, "no deployed student recorded (make deploy records one)")
        print(json.dumps(read_json(args.dir / RECORD), indent=2))


if __name__ == "__main__":
    main()
