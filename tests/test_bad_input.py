"""Every seed command and make target against hostile input (issue 17): non-UTF-8 configs and inputs, outputs
that are directories, under a file or read-only, a corrupt cache, corrupt model files, `timeout: 1e400`.

Each case asserts what the house rule promises: exit 2 (make: non-zero), ONE error line naming the file and the
field, no partial output, inputs untouched (the whole work dir is the same, byte for byte, afterwards).
Each case ended in a Python traceback, or wrote something, before issue 17.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.support import ROOT
from tests.support.data import write_routes
from tests.support.export import tiny_llama_dir  # noqa: F401 (fixture)
from tests.support.hostile import LATIN1, read_only_dir, snapshot, write_tiny_lora

PY = sys.executable


@dataclass
class Case:
    id: str
    argv: object  # (w: Path, fx: SimpleNamespace) -> list
    expect: tuple[str, ...]  # substrings of the one error line (file and field)
    prepare: object = None  # (w, fx) -> None, run before the snapshot


@pytest.fixture(scope="module")
def fx(tmp_path_factory, standin_teacher, teacher_config_for, tiny_llama_dir, base_model_dir):  # noqa: F811
    """What the cases share, outside every work dir: the stand-in teacher's URL, the offline and a tiny base, a
    tiny LoRA for that tiny base."""
    lora = write_tiny_lora(tmp_path_factory.mktemp("lora") / "router_student_mlx", tiny_llama_dir)
    return SimpleNamespace(url=standin_teacher, tiny=tiny_llama_dir, lora=lora, base=base_model_dir)


@pytest.fixture
def w(tmp_path, fx) -> Path:
    """A work dir laid out like the repository (scripts/, train/, tools/ linked; config/ and prompts/ copied) with
    the hostile files under bad/."""
    work = tmp_path / "w"
    work.mkdir()
    for name in ("scripts", "train", "tools"):
        (work / name).symlink_to(ROOT / name)
    for name in ("config", "prompts"):
        shutil.copytree(ROOT / name, work / name)
    bad = work / "bad"
    bad.mkdir()
    teacher = {"base_url": fx.url, "model": "standin-gpt-oss", "timeout": 10, "retries": 1}
    (bad / "good.json").write_text(json.dumps(teacher))
    latin1_model = json.dumps({**teacher, "model": "X"}).encode().replace(b'"X"', b'"' + LATIN1 + b'"')
    (bad / "latin1.json").write_bytes(latin1_model)
    (bad / "t1e400.json").write_text(json.dumps(teacher).replace('"timeout": 10', '"timeout": 1e400'))
    (bad / "in.txt").write_text("turn your eyes red\nlook left\n")
    (bad / "in_latin1.txt").write_bytes(b"turn your eyes red\n" + LATIN1 + b"\n")
    (bad / "skills_latin1.yaml").write_bytes((ROOT / "config" / "skills.yaml").read_bytes() + b"# " + LATIN1 + b"\n")
    (bad / "persona_latin1.md").write_bytes(b"You are a droid. " + LATIN1 + b"\n")
    (bad / "afile").write_text("a file\n")
    (bad / "adir").mkdir()
    (bad / "notdb").mkdir()
    (bad / "notdb" / "cache.sqlite").write_bytes(b"this is not an sqlite database" * 64)
    (bad / "logs").mkdir()
    (bad / "logs" / "decisions.jsonl").write_text(json.dumps({"text": "do a barrel roll", "source": "fallback"}) + "\n")
    return work


def collect(script: str, config: str = "bad/good.json", inp: str = "bad/in.txt", out: str = "data/out.jsonl",
            cache: str = ".cache/teacher", *extra):
    return lambda w, fx: [PY, f"scripts/{script}", "--config", config, "--input", inp, "--out", out, "--cache", cache,
                          *extra]


def corrupt_model(name: str, content: bytes, drop: str | None = None):
    def prepare(w, fx):
        shutil.copytree(fx.tiny, w / "model")
        (w / "model" / name).write_bytes(content)
        if drop:
            (w / "model" / drop).unlink(missing_ok=True)
    return prepare


def corrupt_lora(w, fx):
    shutil.copytree(fx.lora, w / "lora")
    data = (w / "lora" / "adapters.safetensors").read_bytes()
    (w / "lora" / "adapters.safetensors").write_bytes(data[: len(data) // 2])  # a copy cut short


def data_file(name: str, content: bytes):
    def prepare(w, fx):
        (w / "data").mkdir(exist_ok=True)
        (w / "data" / name).write_bytes(content)
    return prepare


def routes_file(content: bytes):
    return data_file("routes.jsonl", content)


def style_file(content: bytes):
    return data_file("style.jsonl", content)


SCRIPTS = ("collect_routes.py", "collect_style.py")
CASES = [
    # ---- teacher stage: configs and inputs ------------------------------------------------------------------
    *[Case(f"{s}: config not UTF-8", collect(s, "bad/latin1.json"), ("bad/latin1.json", "not UTF-8")) for s in SCRIPTS],
    *[Case(f"{s}: timeout 1e400", collect(s, "bad/t1e400.json"), ("bad/t1e400.json", "timeout", "inf"))
      for s in SCRIPTS],
    *[Case(f"{s}: input not UTF-8", collect(s, inp="bad/in_latin1.txt"), ("bad/in_latin1.txt", "not UTF-8"))
      for s in SCRIPTS],
    Case("collect_routes.py: catalog not UTF-8", collect("collect_routes.py", "bad/good.json", "bad/in.txt",
                                                         "data/out.jsonl", ".cache/teacher", "--catalog",
                                                         "bad/skills_latin1.yaml"),
         ("bad/skills_latin1.yaml", "not UTF-8")),
    Case("collect_style.py: persona not UTF-8", collect("collect_style.py", "bad/good.json", "bad/in.txt",
                                                        "data/out.jsonl", ".cache/teacher", "--persona",
                                                        "bad/persona_latin1.md"),
         ("bad/persona_latin1.md", "not UTF-8")),
    Case("expand_prompts.py: config not UTF-8",
         lambda w, fx: [PY, "scripts/expand_prompts.py", "--config", "bad/latin1.json", "--input",
                        "prompts/router_seed.txt", "--out", "prompts/x.txt"], ("bad/latin1.json", "not UTF-8")),
    Case("expand_prompts.py: seeds not UTF-8",
         lambda w, fx: [PY, "scripts/expand_prompts.py", "--config", "bad/good.json", "--input", "bad/in_latin1.txt",
                        "--out", "prompts/x.txt"], ("bad/in_latin1.txt", "not UTF-8")),
    # ---- teacher stage: --out and --cache ----------------------------------------------------------------------
    *[Case(f"{s}: --out is a directory", collect(s, out="bad/adir"), ("bad/adir", "--out", "is a directory"))
      for s in SCRIPTS],
    *[Case(f"{s}: --out under a file", collect(s, out="bad/afile/out.jsonl"),
           ("bad/afile/out.jsonl", "--out", "is a file")) for s in SCRIPTS],
    *[Case(f"{s}: --out read-only", collect(s, out="bad/ro/out.jsonl"), ("bad/ro/out.jsonl", "--out", "cannot write"))
      for s in SCRIPTS],
    *[Case(f"{s}: --out is a prompt file", collect(s, out="bad/in.txt"), ("bad/in.txt:1", "invalid JSON"))
      for s in SCRIPTS],
    *[Case(f"{s}: --cache under a file", collect(s, cache="bad/afile/cache"), ("bad/afile/cache", "--cache"))
      for s in SCRIPTS],
    *[Case(f"{s}: --cache is a file", collect(s, cache="bad/afile"), ("bad/afile", "--cache", "is a file"))
      for s in SCRIPTS],
    *[Case(f"{s}: --cache read-only", collect(s, cache="bad/ro/cache"), ("bad/ro/cache", "--cache", "cannot write"))
      for s in SCRIPTS],
    *[Case(f"{s}: --cache not a database", collect(s, cache="bad/notdb"), ("bad/notdb/cache.sqlite", "--cache"))
      for s in SCRIPTS],
    Case("expand_prompts.py: --out under a file",
         lambda w, fx: [PY, "scripts/expand_prompts.py", "--config", "bad/good.json", "--input",
                        "prompts/router_seed.txt", "--out", "bad/afile/x.txt"], ("bad/afile/x.txt", "--out")),
    # ---- harvest --------------------------------------------------------------------------------------------
    Case("harvest: --out read-only",
         lambda w, fx: [PY, "-m", "distill", "harvest", "--logs", "bad/logs", "--labeled", "data/routes.jsonl",
                        "--out", "bad/ro/harvested.txt"], ("bad/ro/harvested.txt", "--out", "cannot write")),
    Case("harvest: --out is a directory",
         lambda w, fx: [PY, "-m", "distill", "harvest", "--logs", "bad/logs", "--labeled", "data/routes.jsonl",
                        "--out", "bad/adir"], ("bad/adir", "--out", "is a directory")),
    # ---- training and evaluation ----------------------------------------------------------------------------
    Case("finetune_router_mlx.py: data not UTF-8",
         lambda w, fx: [PY, "train/finetune_router_mlx.py", "--base", fx.base, "--train_jsonl", "data/routes.jsonl",
                        "--out", "models/r"], ("data/routes.jsonl", "not UTF-8"), routes_file(LATIN1 + b"\n")),
    Case("finetune_router_mlx.py: --out under a file",
         lambda w, fx: [PY, "train/finetune_router_mlx.py", "--base", fx.base, "--train_jsonl", "data/routes.jsonl",
                        "--out", "bad/afile/r", "--batch", "2"], ("bad/afile/r", "--out", "is a file"),
         lambda w, fx: write_routes(w / "data" / "routes.jsonl")),
    Case("finetune_style_mlx.py: data not JSON",
         lambda w, fx: [PY, "train/finetune_style_mlx.py", "--base", fx.base, "--train_jsonl", "data/style.jsonl",
                        "--out", "models/s"], ("data/style.jsonl:1", "invalid JSON"), style_file(b"{not json\n")),
    Case("eval_router.py: no student",
         lambda w, fx: [PY, "train/eval_router.py", "--student", "models/none"], ("models/none", "--student")),
    Case("eval_style.py: not a student",
         lambda w, fx: [PY, "train/eval_style.py", "--student", "bad/adir"], ("bad/adir", "--student")),
    # ---- export ---------------------------------------------------------------------------------------------
    Case("merge_lora.py: adapters.safetensors cut short",
         lambda w, fx: [PY, "tools/merge_lora.py", "--base", fx.tiny, "--lora", "lora", "--out", "merged"],
         ("lora/adapters.safetensors", "not a readable safetensors file"), corrupt_lora),
    Case("merge_lora.py: --out under a file",
         lambda w, fx: [PY, "tools/merge_lora.py", "--base", fx.tiny, "--lora", fx.lora, "--out", "bad/afile/m"],
         ("bad/afile/m", "--out", "is a file")),
    Case("convert_to_gguf.py: config.json not JSON",
         lambda w, fx: [PY, "tools/convert_to_gguf.py", "--in", "model", "--out", "gguf/x.gguf"],
         ("model/config.json", "invalid JSON"), corrupt_model("config.json", b'{"architectures": ["Llama')),
    Case("convert_to_gguf.py: tokenizer.json not JSON",
         lambda w, fx: [PY, "tools/convert_to_gguf.py", "--in", "model", "--out", "gguf/x.gguf"],
         ("model/tokenizer.json", "invalid JSON"), corrupt_model("tokenizer.json", b'{"version": "1.0", "model": ')),
    Case("convert_to_gguf.py: tokenizer.json not UTF-8",
         lambda w, fx: [PY, "tools/convert_to_gguf.py", "--in", "model", "--out", "gguf/x.gguf"],
         ("model/tokenizer.json", "not UTF-8"), corrupt_model("tokenizer.json", b'{"x": "' + LATIN1 + b'"}')),
    Case("convert_to_gguf.py: tokenizer_config.json not JSON",
         lambda w, fx: [PY, "tools/convert_to_gguf.py", "--in", "model", "--out", "gguf/x.gguf"],
         ("model/tokenizer_config.json", "invalid JSON"),
         corrupt_model("tokenizer_config.json", b'{"chat_template', drop="chat_template.jinja")),
    Case("convert_to_gguf.py: --out is a directory",
         lambda w, fx: [PY, "tools/convert_to_gguf.py", "--in", fx.tiny, "--out", "bad/adir.gguf"],
         ("bad/adir.gguf", "--out", "is a directory"), lambda w, fx: (w / "bad" / "adir.gguf").mkdir()),
]


MAKE_ERROR = re.compile(r"make(\[\d+\])?: \*\*\* ")


def one_error_line(stderr: str, make: bool = False) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    if make:  # make adds its own "make: *** [...] Error 2" ("make[1]: ***" under `make test`) after the command's line
        lines = [line for line in lines if not MAKE_ERROR.match(line)]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def check_case(case: Case, w: Path, fx, cli, *, make_argv: list | None = None) -> None:
    if case.prepare:
        case.prepare(w, fx)
    with read_only_dir(w / "bad" / "ro"):
        before = snapshot(w)
        argv = make_argv or case.argv(w, fx)
        result = cli(*argv, cwd=w, timeout=600)
        after = snapshot(w)
    if make_argv:
        assert result.returncode != 0, result.stdout
    else:
        assert result.returncode == 2, result.stderr
    line = one_error_line(result.stderr, make=bool(make_argv))
    for part in case.expect:
        assert part in line, (part, line)
    assert after == before, {k: (before.get(k), after.get(k)) for k in set(before) | set(after)
                             if before.get(k) != after.get(k)}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_seed_command_with_bad_input(case, w, fx, cli):
    check_case(case, w, fx, cli)


# ---- the make targets over the same inputs ---------------------------------------------------------------------
def make(target: str, *assignments: str):
    return lambda w, fx: ["make", "--no-print-directory", "-C", w, "-f", ROOT / "Makefile", target,
                          f"VENV={ROOT / '.venv'}", *[a.format(w=w, fx=fx) for a in assignments]]


MAKE_CASES = [
    Case("make collect-routes: config not UTF-8", make("collect-routes", "CONFIG=bad/latin1.json"),
         ("bad/latin1.json", "not UTF-8")),
    Case("make collect-style: timeout 1e400", make("collect-style", "CONFIG=bad/t1e400.json"),
         ("bad/t1e400.json", "timeout")),
    Case("make collect-routes: --cache under a file",
         make("collect-routes", "CONFIG=bad/good.json", "COLLECT_ARGS=--cache bad/afile/cache"),
         ("bad/afile/cache", "--cache")),
    Case("make expand: config not UTF-8", make("expand", "CONFIG=bad/latin1.json"), ("bad/latin1.json", "not UTF-8")),
    Case("make train-router: data not UTF-8", make("train-router", "BASE={fx.base}"),
         ("data/routes.jsonl", "not UTF-8"), routes_file(LATIN1 + b"\n")),
    Case("make train-style: data not JSON", make("train-style", "BASE={fx.base}"),
         ("data/style.jsonl:1", "invalid JSON"), style_file(b"{not json\n")),
    Case("make eval-router: no student", make("eval-router", "ROUTER=models/none"), ("models/none", "--student")),
    Case("make eval-style: no student", make("eval-style", "STYLE=models/none"), ("models/none", "--student")),
    Case("make gguf: adapters.safetensors cut short", make("gguf", "ROUTER=lora", "BASE={fx.tiny}"),
         ("lora/adapters.safetensors", "not a readable safetensors file"), corrupt_lora),
    Case("make gguf-style: models is a file", make("gguf-style", "STYLE={fx.lora}", "BASE={fx.tiny}"),
         ("models/style_merged", "--out", "is a file"), lambda w, fx: (w / "models").write_text("not a dir\n")),
    Case("make calibrate: no student", make("calibrate", "ROUTER=models/none"), ("models/none",)),
    Case("make route: no student", make("route", "ROUTER=models/none"), ("models/none",)),
]


@pytest.mark.parametrize("case", MAKE_CASES, ids=[c.id for c in MAKE_CASES])
def test_make_target_with_bad_input(case, w, fx, cli):
    check_case(case, w, fx, cli, make_argv=case.argv(w, fx))
