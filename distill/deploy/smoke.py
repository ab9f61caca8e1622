"""Smoke check of a deployed router, used by the Ansible play on the controller (where the catalog lives).

    python -m distill smoke schema [--catalog config/skills.yaml]     # the `format` to send to Ollama
    python -m distill smoke check  [--catalog ...] < answers.json     # [{"request", "answer"}] or [[request, answer]]

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


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distill smoke", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["schema", "check"])
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
    for line in check_answers(catalog, answers):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
