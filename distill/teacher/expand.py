"""Expand the seed prompts: the teacher paraphrases each skill's seeds until every skill is balanced.

    python scripts/expand_prompts.py --config config/teacher.json --input prompts/router_seed.txt --out prompts/router_expanded.txt

The output is a prompt file (`# skill: NAME` headers as hints for people; labels still come from collection),
replaced atomically. Repeats of a seed or of another paraphrase (normalized text) are skipped.
"""

from __future__ import annotations

import argparse
import math
import re
import time
from pathlib import Path

import jsonschema

from ..errors import cli, fail
from ..fileio import atomic_writer, prompt_lines, read_prompts, read_text
from ..prompting import normalize_text, teacher_expand_prompt
from .client import DEFAULT_CACHE, TeacherClient, TeacherError, TeacherUnreachable, parse_json_answer
from .collect import Rejected, Summary, check_limit, check_outputs, record_id, run_parallel, unreachable_error
from .config import TeacherConfig, load_teacher_config

EXPAND_SCHEMA = {
    "type": "object",
    "properties": {"paraphrases": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 200}}},
    "required": ["paraphrases"],
    "additionalProperties": False,
}


def read_grouped_prompts(path: Path) -> dict[str, list[str]]:
    """Prompts grouped under `# skill: NAME` headers ("" for prompts before any header)."""
    read_prompts(path)  # the usual checks: file exists, is UTF-8, has prompts
    groups: dict[str, list[str]] = {}
    current = ""
    for line in prompt_lines(read_text(path)):
        header = re.match(r"^#\s*skill:\s*(\S+)", line)
        if header:
            current = header.group(1)
        elif line and not line.startswith("#"):
            groups.setdefault(current, []).append(line)
    return groups


def expand(config: TeacherConfig, source: Path, out: Path, *, per_skill: int | None = None,
           cache_dir: Path | None = DEFAULT_CACHE, limit: int | None = None,
           progress: bool | None = None) -> Summary:
    """Write `out`: per skill, new paraphrases until each skill has `per_skill` prompts (default: the largest)."""
    started = time.monotonic()
    summary = Summary("expand", out)
    groups = read_grouped_prompts(source)
    target = per_skill or max(len(v) for v in groups.values())
    seen = {normalize_text(t) for texts in groups.values() for t in texts}
    jobs = []  # (skill, seed text, how many paraphrases)
    for skill, texts in groups.items():
        need = target - len(texts)
        if need > 0:
            count = min(10, math.ceil(need / len(texts)) + 1)
            jobs += [(skill, text, count) for text in texts]
    if limit is not None:
        jobs = jobs[:limit]
    answers: dict[str, list[str]] = {}
    audit_path = out.with_suffix(".audit.jsonl")
    with TeacherClient(config, cache_dir=cache_dir, audit_path=audit_path) as client:
        if jobs:
            client.check_reachable()
        counts = {text: count for _, text, count in jobs}

        def ask(text: str) -> list[str] | Rejected:
            messages = [{"role": "system", "content": teacher_expand_prompt(counts[text])},
                        {"role": "user", "content": text}]
            try:
                reply = client.chat(messages, schema=EXPAND_SCHEMA, temperature=max(config.temperature, 0.7),
                                    tag=record_id(text))
                answer = parse_json_answer(reply.content)
                jsonschema.validate(answer, EXPAND_SCHEMA)
            except TeacherUnreachable:
                raise
            except TeacherError as err:
                return Rejected("teacher_error", str(err))
            except (ValueError, jsonschema.ValidationError) as err:
                return Rejected("unparseable" if isinstance(err, ValueError) else "bad_schema", str(err)[:120])
            return [p.strip() for p in answer["paraphrases"]]

        def keep(text: str, result: list[str] | Rejected) -> None:
            if isinstance(result, Rejected):
                summary.rejected[result.reason] += 1
            else:
                answers[text] = result

        try:
            run_parallel([text for _, text, _ in jobs], ask, keep, config.concurrency, "expand", progress,
                         on_abort=client.cancel)
        except TeacherUnreachable as err:
            raise unreachable_error(config, err, len(answers), len(jobs)) from None
        summary.cached, summary.calls = client.stats.cached, client.stats.calls
    lines = [f"# Paraphrases of {source} by the teacher ({config.model}); made by `make expand`.",
             "# Labels come from collect-routes, not from the headers (hints for humans)."]
    for skill, texts in groups.items():
        need = target - len(texts)
        fresh = _round_robin([answers.get(text, []) for text in texts], need, seen)
        if fresh:
            lines += ["", f"# skill: {skill}" if skill else "# (no skill header)", *fresh]
            summary.labeled += len(fresh)
    with atomic_writer(out) as handle:
        handle.write("\n".join(lines) + "\n")
    summary.elapsed = time.monotonic() - started
    return summary


def _round_robin(lists: list[list[str]], need: int, seen: set[str]) -> list[str]:
    """Take the i-th paraphrase of every seed before any (i+1)-th: variety first; skip repeats and junk."""
    picked: list[str] = []
    for round_ in range(max((len(x) for x in lists), default=0)):
        for options in lists:
            if len(picked) >= need or round_ >= len(options):
                continue
            text = " ".join(options[round_].split())
            key = normalize_text(text)
            if not key or key in seen or text.startswith("#") or len(text) > 200:
                continue
            seen.add(key)
            picked.append(text)
    return picked


@cli
def expand_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python scripts/expand_prompts.py",
                                     description="Paraphrase seed prompts per skill into a balanced prompt file.")
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--input", required=True, type=Path, help="seed prompts with '# skill: NAME' headers")
    parser.add_argument("--out", required=True, type=Path, help="prompt file to write (replaced atomically)")
    parser.add_argument("--per-skill", type=int, default=None,
                        help="prompts per skill, seeds included (default: the largest seed group)")
    parser.add_argument("--limit", type=int, default=None, help="paraphrase only the first N seed prompts")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--no-cache", action="store_true")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    args = parser.parse_args(argv)
    config = load_teacher_config(args.config)
    check_limit(args.limit)
    if args.per_skill is not None and args.per_skill < 1:
        fail("--per-skill", "must be at least 1")
    check_outputs(args)
    summary = expand(config, args.input, args.out, per_skill=args.per_skill, limit=args.limit,
                     cache_dir=None if args.no_cache else args.cache, progress=args.progress)
    print(summary.line().replace(" labeled,", " new prompts,"))


main = expand_main

if __name__ == "__main__":
    main()
