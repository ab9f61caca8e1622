"""Collect training data from the teacher: router labels and styled answers.

    python scripts/collect_routes.py --config config/teacher.json --input prompts/router_seed.txt --out data/routes.jsonl
    python scripts/collect_style.py  --config config/teacher.json --input prompts/style_seed.txt --out data/style.jsonl

Every teacher answer is validated here (servers fail open): a route label must fit the catalog, a styled answer
must be non-empty, not a refusal and not cut off. What fails goes to `<out>.rejected.jsonl` with the reason and
the raw answer. Output is append-only with an fsync per record and deduplicated on normalized text, so a run
killed at any moment is simply re-run; the teacher cache makes the re-run free for prompts already answered.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..errors import DistillError, cli, fail
from ..fileio import (JsonlAppender, check_writable, exclusive_output, read_jsonl, read_prompts, read_text, utc_now,
                      write_jsonl)
from ..prompting import normalize_text, teacher_route_prompt, teacher_style_prompt
from ..skills import DEFAULT_CATALOG, Catalog, LabelError, load_catalog
from .client import (DEFAULT_CACHE, TeacherCache, TeacherCancelled, TeacherClient, TeacherError, TeacherUnreachable,
                     parse_json_answer)
from .config import TeacherConfig, load_teacher_config

DEFAULT_PERSONA = Path("config/persona.md")
# Rejections caused by the transport, not by the teacher's answer: retried on the next run.
RETRY_NEXT_RUN = frozenset({"teacher_error"})
# Longer prompts are rejected without asking (reason too_long): a visitor's request is a sentence or two, and a
# pasted file would cost a long teacher call and land in the training data.
MAX_PROMPT_CHARS = 1000
# A healthy teacher gets a few percent rejected; a broken one (wrong model, structured output ignored) most.
MAX_REJECTED = 0.5
# Group commit: every record is written to the kernel at once (kill -9 safe), fsync'd at most every 0.25 s.
SYNC_INTERVAL = 0.25

_REFUSAL = re.compile(
    r"^\s*(?:i'?m sorry,? but i (?:can(?:no|')t|won'?t)|i can(?:no|')t (?:help|assist) with|"
    r"i (?:won'?t|will not) (?:help|answer)|as an ai(?: language model)?,? i)",
    re.I,
)


def record_id(text: str) -> str:
    return hashlib.sha256(normalize_text(text).encode()).hexdigest()[:12]


@dataclass
class Rejected:
    reason: str
    detail: str = ""
    raw: Any = None


@dataclass
class Summary:
    task: str
    out: Path
    labeled: int = 0
    rejected: Counter = field(default_factory=Counter)
    done_before: int = 0
    duplicates: int = 0
    cached: int = 0
    calls: int = 0
    elapsed: float = 0.0

    def line(self) -> str:
        reasons = ", ".join(f"{reason} {n}" for reason, n in self.rejected.most_common())
        rejected = sum(self.rejected.values())
        return (f"{self.task}: {self.labeled} labeled, {rejected} rejected" + (f" ({reasons})" if reasons else "")
                + f", {self.done_before} already done, {self.duplicates} duplicates skipped, {self.cached} cached, "
                f"{self.calls} teacher calls, {self.elapsed:.1f}s -> {self.out}")


# ---------------------------------------------------------------------------------------------------------
# Tasks: how to ask the teacher about one prompt and what makes the answer acceptable.
class RouteTask:
    name = "routes"
    text_field = "text"

    def __init__(self, catalog: Catalog, votes: int = 1, min_agree: int | None = None,
                 temperature: float | None = None):
        self.catalog = catalog
        self.votes = votes
        self.min_agree = min_agree or votes // 2 + 1
        self.temperature = temperature
        self.system = teacher_route_prompt(catalog)
        self.schema = catalog.label_schema()

    def ask(self, client: TeacherClient, text: str, refresh: bool = False) -> dict | Rejected:
        messages = [{"role": "system", "content": self.system}, {"role": "user", "content": text}]
        labels: Counter = Counter()
        reasons: Counter = Counter()
        raws = []
        for vote in range(self.votes):
            seed = vote if self.votes > 1 else None
            reply = client.chat(messages, schema=self.schema, temperature=self.temperature, seed=seed,
                                tag=record_id(text), refresh=refresh)
            raws.append(reply.content)
            try:
                label = self.catalog.validate(parse_json_answer(reply.content))
                labels[label.canonical()] += 1
            except ValueError as err:  # LabelError is a ValueError too
                reason = err.reason if isinstance(err, LabelError) else (
                    "truncated" if reply.finish_reason == "length" else "unparseable")
                reasons[reason] += 1
                last_detail = err.detail if isinstance(err, LabelError) else str(err)
        raw: Any = raws[0] if self.votes == 1 else raws
        if labels:
            canonical, agree = labels.most_common(1)[0]
            if agree >= self.min_agree:
                label = json.loads(canonical)
                return {"skill": label["skill"], "args": label["args"], "votes": agree}
            return Rejected("no_agreement", f"best label {canonical} got {agree} of {self.votes} votes "
                            f"(need {self.min_agree})", raw)
        reason = reasons.most_common(1)[0][0]
        return Rejected(reason, last_detail, raw)


class StyleTask:
    name = "style"
    text_field = "prompt"

    def __init__(self, persona: str):
        self.system = teacher_style_prompt(persona)

    def ask(self, client: TeacherClient, text: str, refresh: bool = False) -> dict | Rejected:
        messages = [{"role": "system", "content": self.system}, {"role": "user", "content": text}]
        reply = client.chat(messages, tag=record_id(text), refresh=refresh)
        answer = reply.content.strip()
        if reply.finish_reason == "length":
            return Rejected("truncated", "finish_reason=length", reply.content)
        if not answer:
            return Rejected("empty", "no answer text", reply.content)
        if _REFUSAL.search(answer):
            return Rejected("refused", answer[:80], reply.content)
        return {"response": answer}


# ---------------------------------------------------------------------------------------------------------
def collect(task: RouteTask | StyleTask, config: TeacherConfig, inputs: list[Path], out: Path, *,
            cache_dir: Path | None = DEFAULT_CACHE, limit: int | None = None, retry_rejected: bool = False,
            progress: bool | None = None) -> Summary:
    """Ask the teacher about every new prompt in `inputs`; append good records to `out`, the rest to rejects.

    One run at a time per `out`: a second one fails at once (it would ask again and duplicate every record)."""
    with exclusive_output(out):
        return _collect(task, config, inputs, out, cache_dir=cache_dir, limit=limit, retry_rejected=retry_rejected,
                        progress=progress)


def _collect(task: RouteTask | StyleTask, config: TeacherConfig, inputs: list[Path], out: Path, *,
             cache_dir: Path | None, limit: int | None, retry_rejected: bool, progress: bool | None) -> Summary:
    started = time.monotonic()
    summary = Summary(task.name, out)
    prompts = _unique_prompts(inputs, summary)
    if limit is not None:
        prompts = prompts[:limit]
    rejects_path = out.with_name(out.name.removesuffix(".jsonl") + ".rejected.jsonl")
    audit_path = out.with_name(out.name.removesuffix(".jsonl") + ".audit.jsonl")
    done, rejected_before = _existing(out, task.text_field), _existing(rejects_path, task.text_field)
    todo = []
    for text in prompts:
        key = normalize_text(text)
        if key in done:
            summary.done_before += 1
        elif key in rejected_before and rejected_before[key]["reason"] not in RETRY_NEXT_RUN and not retry_rejected:
            summary.done_before += 1
        else:
            todo.append(text)
    retry_keys = {normalize_text(t) for t in todo if normalize_text(t) in rejected_before}

    with TeacherClient(config, cache_dir=cache_dir, audit_path=audit_path) as client:
        if todo:
            client.check_reachable()  # before anything is written
        with JsonlAppender(out, SYNC_INTERVAL) as good, _LazyAppender(rejects_path) as bad:
            def keep(text: str, result: dict | Rejected) -> None:
                base = {"id": record_id(text), task.text_field: text}
                if isinstance(result, Rejected):
                    summary.rejected[result.reason] += 1
                    bad.append({**base, "reason": result.reason, "detail": result.detail, "raw": result.raw,
                                "teacher": config.model, "created": utc_now()})
                else:
                    summary.labeled += 1
                    good.append({**base, **result, "teacher": config.model, "created": utc_now()})

            def ask(text: str) -> dict | Rejected:
                if len(text) > MAX_PROMPT_CHARS:
                    return Rejected("too_long", f"{len(text)} characters, more than {MAX_PROMPT_CHARS}")
                try:
                    return task.ask(client, text, refresh=retry_rejected and normalize_text(text) in retry_keys)
                except (TeacherUnreachable, TeacherCancelled):
                    raise
                except TeacherError as err:
                    return Rejected("teacher_error", str(err))

            try:
                run_parallel(todo, ask, keep, config.concurrency, task.name, progress, on_abort=client.cancel)
            except TeacherUnreachable as err:
                raise unreachable_error(config, err, summary.labeled + sum(summary.rejected.values()), len(todo)) from None
        for note in client.stats.downgrades:
            print(f"note: structured output: {note}", file=sys.stderr)
        summary.cached, summary.calls = client.stats.cached, client.stats.calls
    _compact_rejects(rejects_path, out, task.text_field)
    summary.elapsed = time.monotonic() - started
    return summary


def run_parallel(items: list[str], ask: Callable[[str], Any], keep: Callable[[str, Any], None],
                  workers: int, desc: str, progress: bool | None, on_abort: Callable[[], None] | None = None) -> None:
    """Ask about `items` with `workers` threads; results are written by this thread as they arrive.

    At most 2 x workers items are queued. On an abort (teacher gone, Ctrl-C) nothing more is written, queued
    items are dropped and `on_abort` (TeacherClient.cancel) cuts off the requests in flight, so the threads end
    within a second, not after their retries (about 10 minutes with the default timeout and retries); a second
    Ctrl-C meanwhile exits at once. Records already written stay: each is flushed as it is written.
    """
    pending: dict[Future, str] = {}
    queue = iter(items)
    bar = tqdm(total=len(items), desc=desc, unit="prompt", disable=not progress if progress is not None else None,
               file=sys.stderr, dynamic_ncols=True)
    restore = None
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="teacher") as pool:
            try:
                while True:
                    while len(pending) < 2 * workers:
                        text = next(queue, None)
                        if text is None:
                            break
                        pending[pool.submit(ask, text)] = text
                    if not pending:
                        break
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        text = pending.pop(future)
                        keep(text, future.result())
                        bar.update()
            except BaseException:
                _cancel(pending)
                restore = _exit_on_second_interrupt()
                if on_abort:
                    on_abort()
                raise
            finally:
                bar.close()
    finally:
        if restore:
            restore()


def _exit_on_second_interrupt() -> Callable[[], None] | None:
    """While the first Ctrl-C is being handled, a second one ends the process at once (exit 130)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def exit_now(signum, frame):
        print("interrupted again: exiting now", file=sys.stderr, flush=True)
        os._exit(130)

    previous = signal.signal(signal.SIGINT, exit_now)
    return lambda: signal.signal(signal.SIGINT, previous)


def unreachable_error(config: TeacherConfig, err: TeacherUnreachable, done: int, total: int) -> DistillError:
    return DistillError(config.source, f"teacher unreachable: {err.detail}; {done} of {total} prompts done "
                        "in this run (kept), re-run to continue", "base_url")


def _cancel(pending: dict[Future, str]) -> None:
    for future in pending:
        future.cancel()


def _unique_prompts(inputs: list[Path], summary: Summary) -> list[str]:
    seen: set[str] = set()
    prompts = []
    for path in inputs:
        for text in read_prompts(path):
            key = normalize_text(text)
            if key in seen:
                summary.duplicates += 1
                continue
            seen.add(key)
            prompts.append(text)
    return prompts


def _existing(path: Path, text_field: str) -> dict[str, dict]:
    """Records already in an output file by normalized text (the last one wins); a torn tail is skipped.

    Reads only: a file that is not ours (input and --out swapped) fails here, untouched; the appender cuts a
    torn tail when it opens the file, after every output has been checked."""
    if not path.exists():
        return {}
    records = {}
    for number, record in enumerate(read_jsonl(path, allow_empty=True, torn_tail_ok=True), 1):
        text = record.get(text_field)
        if not isinstance(text, str):
            fail(f"{path}:{number}", f"missing {text_field!r} (is this the right --out file?)", text_field)
        records[normalize_text(text)] = record
    return records


def _compact_rejects(rejects_path: Path, out: Path, text_field: str) -> None:
    """Keep one reject per prompt (the latest) and drop prompts that have been labeled since."""
    if not rejects_path.exists():
        return
    labeled = set(_existing(out, text_field))
    latest = {k: r for k, r in _existing(rejects_path, text_field).items() if k not in labeled}
    if sum(1 for line in rejects_path.open() if line.strip()) != len(latest):
        write_jsonl(rejects_path, list(latest.values()))


class _LazyAppender:
    """A JsonlAppender that creates its file only when the first record comes."""

    def __init__(self, path: Path):
        self.path = path
        self._appender: JsonlAppender | None = None

    def append(self, record: dict) -> None:
        if self._appender is None:
            self._appender = JsonlAppender(self.path, SYNC_INTERVAL)
        self._appender.append(record)

    def __enter__(self) -> _LazyAppender:
        return self

    def __exit__(self, *exc) -> None:
        if self._appender:
            self._appender.close()


# ---------------------------------------------------------------------------------------------------------
# CLIs (the scripts/ shims call these)
def _common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="teacher config (config/teacher.json)")
    parser.add_argument("--input", required=True, type=Path, nargs="+", help="prompt file(s), one prompt a line")
    parser.add_argument("--out", required=True, type=Path, help="JSONL to append to")
    parser.add_argument("--limit", type=int, default=None, help="only the first N unique prompts")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"answer cache (default {DEFAULT_CACHE})")
    parser.add_argument("--no-cache", action="store_true", help="ask the teacher even for cached prompts")
    parser.add_argument("--retry-rejected", action="store_true",
                        help="ask again about prompts rejected earlier (fresh answers, not the cached ones)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bar (default: when stderr is a terminal)")
    parser.add_argument("--max-rejected", type=float, default=MAX_REJECTED, metavar="SHARE",
                        help="exit 2 when more than this share of the prompts asked in this run was rejected "
                             f"(records are kept; default {MAX_REJECTED})")


def check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        fail("--limit", "must be at least 1")


def check_outputs(args: argparse.Namespace) -> None:
    """--out and --cache can be written (one line now, not a traceback after the teacher's work)."""
    check_writable(args.out, "--out")
    if not args.no_cache:
        check_writable(args.cache, "--cache", directory=True)
        TeacherCache.check(args.cache)


def check_max_rejected(share: float) -> None:
    if not 0 <= share <= 1:
        fail("--max-rejected", f"{share:g} is not a share between 0 and 1")


def check_rejected_share(summary: Summary, max_share: float) -> None:
    """Fail (exit 2) when too many of this run's prompts were rejected, so `make collect` does not go on to train
    on a fraction of the data; what was labeled stays in the file."""
    rejected = sum(summary.rejected.values())
    asked = summary.labeled + rejected
    if asked and rejected / asked > max_share:
        rejects = summary.out.with_name(summary.out.name.removesuffix(".jsonl") + ".rejected.jsonl")
        fail(summary.out, f"{rejected} of {asked} prompts asked ({rejected / asked:.0%}) were rejected, more than "
             f"--max-rejected {max_share:g}; reasons in {rejects}; the {summary.labeled} labeled are kept",
             "--max-rejected")


@cli
def routes_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python scripts/collect_routes.py", description="Label router prompts with the teacher.")
    _common_args(parser)
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG, help="skills catalog (config/skills.yaml)")
    parser.add_argument("--votes", type=int, default=1, help="ask K times and keep agreeing labels only")
    parser.add_argument("--min-agree", type=int, default=None, help="votes that must agree (default: majority)")
    args = parser.parse_args(argv)
    config = load_teacher_config(args.config)
    catalog = load_catalog(args.catalog)
    if args.votes < 1:
        fail("--votes", "must be at least 1")
    if args.min_agree is not None and not 1 <= args.min_agree <= args.votes:
        fail("--min-agree", f"must be between 1 and --votes ({args.votes})")
    check_limit(args.limit)
    check_max_rejected(args.max_rejected)
    check_outputs(args)
    # Votes only differ when the teacher samples: use a warm temperature if the config asks for greedy decoding.
    temperature = max(config.temperature, 0.7) if args.votes > 1 else None
    task = RouteTask(catalog, args.votes, args.min_agree, temperature)
    for path in args.input:
        read_prompts(path)  # every input is checked before anything is asked
    summary = collect(task, config, args.input, args.out, cache_dir=None if args.no_cache else args.cache,
                      limit=args.limit, retry_rejected=args.retry_rejected, progress=args.progress)
    print(summary.line())
    check_rejected_share(summary, args.max_rejected)


@cli
def style_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python scripts/collect_style.py",
                                     description="Collect in-persona answers from the teacher.")
    _common_args(parser)
    parser.add_argument("--persona", type=Path, default=DEFAULT_PERSONA, help="persona (config/persona.md)")
    args = parser.parse_args(argv)
    config = load_teacher_config(args.config)
    persona = read_text(args.persona, "persona file")  # one line when missing or not UTF-8
    if not persona.strip():
        fail(args.persona, "persona file is empty", "--persona")
    check_limit(args.limit)
    check_max_rejected(args.max_rejected)
    check_outputs(args)
    for path in args.input:
        read_prompts(path)
    summary = collect(StyleTask(persona), config, args.input, args.out,
                      cache_dir=None if args.no_cache else args.cache, limit=args.limit,
                      retry_rejected=args.retry_rejected, progress=args.progress)
    print(summary.line())
    check_rejected_share(summary, args.max_rejected)
