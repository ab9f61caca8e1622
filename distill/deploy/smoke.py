"""Smoke check of a deployed router, used by the Ansible play on the controller (where the catalog lives).

    python -m distill smoke schema [--catalog config/skills.yaml]     # the `format` to send to Ollama
    python -m distill smoke check  [--catalog ...] < answers.json     # [{"request", "answer"}] or [[request, answer]]
    python -m distill smoke decisions [--catalog ...] < decisions.json  # [[request, decision]] from the router service

`check` prints one line per request and exits 2 with one `error:` line when any answer is not a valid label.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import cli, fail
from ..skills import DEFAULT_CATALOG, Catalog, LabelError, load_catalog


def check_answers(catalog: Catalog, answers: list[dict]) -> list[str]:
    """One line per answer: `request -> canonical label`; raises DistillError at the first bad answer."""
    if not answers:
        fail("smoke", "no answers to check")
    lines = []
    for item in answers:
        # {"request": ..., "answer": ...} or a [request, answer] pair (what Ansible's zip filter makes)
        if isinstance(item, dict):
            request, answer = item.get("request"), item.get("answer")
        else:
            request, answer = item if isinstance(item, list) and len(item) == 2 else (None, None)
        if not isinstance(request, str) or not isinstance(answer, str):
            fail("smoke", "each item needs a request and an answer string", "answers")
        try:
            label = catalog.validate(json.loads(answer))
        except json.JSONDecodeError as err:
            fail("smoke", f"request {request!r}: answer {answer[:120]!r} is not JSON ({err.msg})")
        except LabelError as err:
            fail("smoke", f"request {request!r}: answer {answer[:120]!r} is not a catalog label ({err})")
        lines.append(f"{request!r} -> {label.canonical()}")
    return lines


# Fallback reasons that mean the deployment is broken, not that the student was unsure.
BROKEN = ("backend_down", "backend_error", "timeout", "no_logprobs", "bad_model", "no_tokenizer", "no_student")


def check_decisions(catalog: Catalog, pairs: list) -> list[str]:
    """The router service's answers (`POST /route`): each a decision whose label is in the catalog, and no
    fallback for a broken deployment (Ollama down, no logprobs, ...). One line each; DistillError at the first bad."""
    if not pairs:
        fail("smoke", "no decisions to check")
    lines = []
    for item in pairs:
        request, decision = item if isinstance(item, list) and len(item) == 2 else (None, None)
        if not isinstance(request, str) or not isinstance(decision, dict):
            fail("smoke", "each item needs a request string and the service's decision object", "decisions")
        reason, source = decision.get("reason"), decision.get("source")
        if source not in ("student", "fallback"):
            fail("smoke", f"request {request!r}: not a decision: {json.dumps(decision)[:160]}")
        if reason in BROKEN:
            fail("smoke", f"request {request!r}: the service fell back with {reason}: {decision.get('detail', '')}")
        try:
            label = catalog.validate({"skill": decision.get("skill"), "args": decision.get("args")})
        except LabelError as err:
            fail("smoke", f"request {request!r}: decision {json.dumps(decision)[:160]} is not a catalog label ({err})")
        why = "" if source == "student" else f" ({reason}; proposed {json.dumps(decision.get('proposal'))})"
        lines.append(f"{request!r} -> {source} {label.canonical()} confidence "
                     f"{float(decision.get('confidence') or 0):.3f}{why}")
    return lines


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distill smoke", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["schema", "check", "decisions"])
    parser.add_argument("--catalog", default=str(DEFAULT_CATALOG))
    args = parser.parse_args(argv)
    catalog = load_catalog(args.catalog)
    if args.action == "schema":
        print(json.dumps(catalog.label_schema(), separators=(",", ":")))
        return 0
    try:
        answers = json.load(sys.stdin)
    except json.JSONDecodeError as err:
        fail("<stdin>", f"invalid JSON: {err.msg}")
    if not isinstance(answers, list):
        fail("<stdin>", "expected a JSON list of {request, answer}")
    for line in (check_decisions if args.action == "decisions" else check_answers)(catalog, answers):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
