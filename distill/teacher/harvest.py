"""Turn the robot's decision logs into the next round of training prompts, most needed first.

    python -m distill harvest --logs data/harvest --labeled data/routes.jsonl --out prompts/harvested.txt

`make harvest` fetches the logs (ansible/harvest.yml: `data/harvest/<host>/decisions.jsonl` and its rotated
copies `decisions.jsonl.1` ...) and then runs this. Every decision line under --logs is read (a torn or
unparseable line is skipped and counted); texts are deduplicated by their normalized form
(`distill.prompting.normalize_text`), against each other and against the texts already labeled in --labeled
(or rejected for good by the teacher, in its .rejected.jsonl sibling); what is left is written one prompt a
line, ordered by need: requests that fell back first, then ascending confidence (the lowest confidence any
robot saw for that text), then the most frequent. `make collect` labels the file with the teacher, and the next
`make train-router` trains on the union.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import cli, fail
from ..fileio import atomic_writer, check_writable, read_jsonl, utc_now
from ..prompting import normalize_text

DEFAULT_LOGS = Path("data/harvest")
DEFAULT_LABELED = Path("data/routes.jsonl")
DEFAULT_OUT = Path("prompts/harvested.txt")
_LOG_NAME = re.compile(r".+\.jsonl(?:\.\d+)?$")  # decisions.jsonl and its rotated copies decisions.jsonl.N


@dataclass
class Candidate:
    """One distinct request (by normalized text) and what the robots did with it."""

    text: str  # as first seen, whitespace collapsed (a prompt file holds one line per prompt)
    seen: int = 0
    fallbacks: int = 0
    confidence: float = 1.0  # the lowest seen
    reasons: set[str] = field(default_factory=set)

    def need(self) -> tuple:
        """Sort key: fallbacks first, then ascending confidence, then the most frequent."""
        return (self.fallbacks == 0, self.confidence, -self.seen, normalize_text(self.text))


@dataclass
class Harvest:
    files: list[Path]
    decisions: int = 0
    unparseable: int = 0
    unwritable: int = 0  # texts starting with '#' would read back as comments
    candidates: dict[str, Candidate] = field(default_factory=dict)
    already_labeled: int = 0
    prompts: list[Candidate] = field(default_factory=list)

    def summary(self) -> str:
        fallbacks = sum(1 for c in self.prompts if c.fallbacks)
        return (f"{len(self.files)} log files, {self.decisions} decisions ({self.unparseable} unparseable lines "
                f"skipped), {len(self.candidates)} distinct texts, {self.already_labeled} already labeled or "
                f"rejected, {len(self.prompts)} prompts to label ({fallbacks} fell back)")


def find_logs(root: Path) -> list[Path]:
    """Decision logs under `root` (a dir, searched recursively, or one file), each live log after its rotated
    copies (oldest first)."""
    if not root.exists():
        fail(root, "not found (fetch the robot logs first: make harvest NET=..., or ansible/harvest.yml)", "--logs")
    if root.is_file():
        return [root]
    files = [p for p in root.rglob("*") if p.is_file() and _LOG_NAME.fullmatch(p.name)]
    if not files:
        fail(root, "no decision logs here (decisions.jsonl[.N]); is DISTILL_DECISION_LOG set on the robot?", "--logs")
    return sorted(files, key=_oldest_first)


def _oldest_first(path: Path) -> tuple:
    stem, _, suffix = path.name.rpartition(".")
    if suffix.isdigit():
        return (str(path.parent), stem, -int(suffix))
    return (str(path.parent), path.name, 0)


def parse_decision(line: str) -> dict | None:
    """A decision line as a dict with a non-empty text, or None for a torn/foreign/unparseable line."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("text"), str) or not record["text"].strip():
        return None
    return record


def read_decisions(harvest: Harvest) -> None:
    """Fold every decision of every file into one Candidate per normalized text."""
    for path in harvest.files:
        with path.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if not line.strip():
                    continue
                record = parse_decision(line)
                if record is None:
                    harvest.unparseable += 1
                    continue
                harvest.decisions += 1
                add_decision(harvest.candidates, record)


def add_decision(candidates: dict[str, Candidate], record: dict) -> None:
    text = " ".join(record["text"].split())
    candidate = candidates.setdefault(normalize_text(text), Candidate(text))
    candidate.seen += 1
    if record.get("source") != "student":  # "fallback", or a line from a router that could not decide
        candidate.fallbacks += 1
        candidate.reasons.add(str(record.get("reason") or "fallback"))
    confidence = record.get("confidence")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)):
        confidence = 0.0  # unknown confidence: treat as the least sure
    candidate.confidence = min(candidate.confidence, float(confidence))


def labeled_texts(path: Path) -> set[str]:
    """Normalized texts already labeled (data/routes.jsonl), or that the teacher rejected for good (collect
    never asks again about those; data/routes.rejected.jsonl); none when the files do not exist yet."""
    from .collect import RETRY_NEXT_RUN

    keys = set()
    rejects = path.with_name(path.name.removesuffix(".jsonl") + ".rejected.jsonl")
    for source in (path, rejects):
        records = read_jsonl(source, allow_empty=True) if source.exists() else []
        for number, record in enumerate(records, 1):
            if not isinstance(record.get("text"), str):
                fail(f"{source}:{number}", "missing or not a string (is this a routes file?)", "text")
            if source == path or record.get("reason") not in RETRY_NEXT_RUN:
                keys.add(normalize_text(record["text"]))
    return keys


def select_prompts(harvest: Harvest, labeled: set[str], limit: int | None = None) -> None:
    fresh = []
    for key, candidate in harvest.candidates.items():
        if key in labeled:
            harvest.already_labeled += 1
        elif candidate.text.startswith("#"):
            harvest.unwritable += 1
        else:
            fresh.append(candidate)
    harvest.prompts = sorted(fresh, key=Candidate.need)[:limit]


def write_prompts(harvest: Harvest, out: Path) -> None:
    """The prompt file (one a line), with `#` header lines that say where it came from; atomic."""
    with atomic_writer(out) as handle:
        handle.write(f"# harvested by distill.harvest {utc_now()}\n")
        handle.write(f"# {harvest.summary()}\n")
        if harvest.unwritable:
            handle.write(f"# {harvest.unwritable} texts starting with '#' left out (they would read as comments)\n")
        handle.write("# order: fell back first, then ascending confidence, then most frequent\n")
        for candidate in harvest.prompts:
            handle.write(candidate.text + "\n")


def harvest_logs(logs: Path, labeled: Path, out: Path, limit: int | None = None) -> Harvest:
    """The whole step: read the logs, dedupe, order by need, write `out`."""
    harvest = Harvest(find_logs(logs))
    read_decisions(harvest)
    select_prompts(harvest, labeled_texts(labeled), limit)
    write_prompts(harvest, out)
    return harvest


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m distill harvest", description=__doc__.split("\n\n")[0])
    p.add_argument("--logs", type=Path, default=DEFAULT_LOGS, help="dir of fetched decision logs (or one log file)")
    p.add_argument("--labeled", type=Path, default=DEFAULT_LABELED, help="routes already labeled (skipped)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="prompt file to write")
    p.add_argument("--limit", type=int, help="keep only the N most needed prompts")
    return p


@cli
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.limit is not None and args.limit < 1:
        fail("--limit", "must be at least 1")
    check_writable(args.out, "--out")
    harvest = harvest_logs(args.logs, args.labeled, args.out, args.limit)
    print(f"{args.out}: {harvest.summary()}")


if __name__ == "__main__":
    main()
