"""The router: act on the student's label only when it is valid and confident, else fall back.

    python -m distill route "turn your eyes red"                       # GGUF in llama-cpp-python
    python -m distill route --ollama http://orin:11434 --model router-student "look left"
    python -m distill route --pretty "look left"                       # indented, for people

It prints the decision as one compact JSON line (what a conductor reads) and exits 0 whenever it decided,
including every fallback: no trained student (`no_student`), an empty text (`empty_text`), an unloadable GGUF
(`bad_model`, `no_tokenizer`), a backend that fails (`backend_error`, `timeout`, ...).

A backend (distill.runtime.backends) turns text into a `RawPrediction`; the `Router` turns that into a
`Decision`: `source="student"` when the label is valid and the confidence reaches the threshold, else
`source="fallback"` with the reason, answered by the big chat model.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import cli, fail
from ..prompting import brief_route_prompt
from ..skills import DEFAULT_CATALOG, FALLBACK_SKILL, Catalog, load_catalog
from ..student import StudentSpec, is_student, student_json_path
from .backends import (BACKEND_ERROR, DEFAULT_STOP, Backend, LlamaCppBackend, ModelUnavailable, OllamaBackend,
                       RawPrediction, Unavailable, failed, gguf_version)
from .decisions import DecisionLog

logger = logging.getLogger("distill.runtime")

DEFAULT_STUDENT = Path("models/router_student_mlx")
DEFAULT_GGUF = Path("gguf/router-student.gguf")
DEFAULT_THRESHOLD = 0.5  # used only until `make calibrate` stores one in student.json
NEVER_ACT = 1.01  # a threshold no confidence reaches: everything falls back
BELOW_THRESHOLD = "below_threshold"  # the reason a valid but unsure label falls back
NO_STUDENT = "no_student"  # nothing trained yet: never act on the untrained base
EMPTY_TEXT = "empty_text"  # nothing to route
NO_STUDENT_HINT = ("no trained router student: every request falls back to the chat model. Train one offline with "
                   "`make demo`, or with your teacher: `make collect train-router gguf calibrate` (docs/demo.md)")


# ---- the big chat model ---------------------------------------------------------------------------------


class FallbackChat:
    """The big chat model behind an OpenAI-compatible endpoint; `answer(text)` returns its reply."""

    def __init__(self, base_url: str, model: str, *, api_key: str = "not-needed", timeout_s: float = 30.0,
                 system_prompt: str | None = None, max_tokens: int = 200):
        from openai import OpenAI

        self.model = model
        self.system_prompt = system_prompt
        self.max_tokens = max_tokens
        self.client = OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0)

    @classmethod
    def from_config(cls, path: str | Path, persona: str | Path | None = None) -> FallbackChat:
        """Same file format as config/teacher.json (the teacher and the chat model may well be one server)."""
        from ..teacher.config import load_teacher_config

        config = load_teacher_config(path)
        system = Path(persona).read_text() if persona else None
        return cls(config.base_url[0], config.model, api_key=config.api_key, timeout_s=config.timeout,
                   system_prompt=system)

    def answer(self, text: str) -> str:
        messages = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else []) + [
            {"role": "user", "content": text}
        ]
        reply = self.client.chat.completions.create(model=self.model, messages=messages, max_tokens=self.max_tokens)
        return (reply.choices[0].message.content or "").strip()


# ---- the router -----------------------------------------------------------------------------------------


@dataclass
class Decision:
    skill: str
    args: dict
    confidence: float
    source: str  # "student" | "fallback"
    reason: str | None  # None when the student routes; else why it fell back
    latency_ms: float  # the whole route() call, fallback answer included
    student_ms: float = 0.0  # the student's share
    reply: str | None = None  # the big model's answer when the skill is chat (and an endpoint is configured)
    proposal: dict | None = None  # what the student proposed, when it fell back
    detail: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


class Router:
    """Act on the student's label only when it is valid and confident; otherwise fall back to the chat model."""

    def __init__(self, backend: Backend, catalog: Catalog, system_prompt: str | None, threshold: float,
                 fallback: FallbackChat | None = None, log: DecisionLog | None = None):
        self.backend = backend
        self.catalog = catalog
        self.system_prompt = system_prompt
        self.threshold = threshold
        self.fallback = fallback
        self.log = log
        self.last_prediction: RawPrediction | None = None  # for --raw and debugging

    @property
    def unavailable(self) -> tuple[str, str] | None:
        """(reason, detail) when this router can never act (no student, unloadable model), else None."""
        backend = self.backend
        return (backend.reason, backend.detail) if isinstance(backend, Unavailable) else None

    @classmethod
    def from_student(cls, student: str | Path | None, *, gguf: str | Path | None = None, ollama: str | None = None,
                     model: str | None = None, threshold: float | None = None, fallback: FallbackChat | None = None,
                     log: DecisionLog | None = None, catalog: Catalog | None = None, untrained: bool = False,
                     **backend_kwargs) -> Router:
        """A router for a trained student (student dir or student.json) served from a GGUF or by Ollama.

        With `student=None` (nothing trained yet) every request falls back with reason `no_student`; only
        `untrained=True` routes with the untrained base and the catalog's brief prompt (benchmarks, mechanics).
        A GGUF that cannot be loaded (missing, corrupt, truncated, no tokenizer) does not raise either: the router
        falls back on every request with the reason (`bad_model`, `no_tokenizer`); `router.unavailable` says why.
        """
        spec = StudentSpec.load(student) if student is not None else None
        catalog = catalog or (spec.load_catalog() if spec else load_catalog(DEFAULT_CATALOG))
        if spec is None and not untrained:
            return cls(Unavailable(catalog, NO_STUDENT, NO_STUDENT_HINT, "none"), catalog, None, NEVER_ACT,
                       fallback=fallback, log=log)
        system = spec.system_prompt if spec else brief_route_prompt(catalog)
        stop = (spec.stop if spec else None) or DEFAULT_STOP
        if ollama:
            if not model:
                fail("--model", "the Ollama model name is required with --ollama")
            backend = OllamaBackend(ollama, model, catalog, system_prompt=system, stop=stop, **backend_kwargs)
        else:
            gguf = Path(gguf or DEFAULT_GGUF)
            version = f"{spec.name}:{gguf_version(gguf)}" if spec else None
            try:
                backend = LlamaCppBackend(gguf, catalog, system_prompt=system, stop=stop, model_version=version,
                                          chat_template=spec.chat_template if spec else None, **backend_kwargs)
            except ModelUnavailable as err:
                logger.warning("%s: every request falls back (%s)", err, err.reason)
                backend = Unavailable(catalog, err.reason, str(err), version or gguf.name)
        if threshold is None:
            threshold = spec.threshold if spec else None
        if threshold is None:
            if not isinstance(backend, Unavailable):  # it never acts anyway: one warning (why) is enough
                logger.warning("no calibrated threshold (run make calibrate); using %s", DEFAULT_THRESHOLD)
            threshold = DEFAULT_THRESHOLD
        return cls(backend, catalog, system, threshold, fallback=fallback, log=log)

    def route(self, text: str) -> Decision:
        """Never raises on bad model output, an empty text or a failing backend, chat model or log."""
        started = time.perf_counter()
        if not isinstance(text, str) or not text.strip():
            pred = failed(text if isinstance(text, str) else "", EMPTY_TEXT, "nothing to route: the text is empty",
                          started)
        else:
            try:
                pred = self.backend.predict(text, self.system_prompt)
            except Exception as err:  # noqa: BLE001 -- a backend bug must not take the conductor down
                pred = failed(text, BACKEND_ERROR, f"{type(err).__name__}: {err}", started)
        self.last_prediction = pred
        decision = self.decide(pred)
        decision.student_ms = round(pred.latency_ms, 1)
        if decision.skill == FALLBACK_SKILL and decision.reason != EMPTY_TEXT:
            self._answer(text, decision)
        decision.latency_ms = round((time.perf_counter() - started) * 1000, 1)
        self._log(text, decision)
        return decision

    def decide(self, pred: RawPrediction) -> Decision:
        """The threshold rule, on its own: act iff the label is valid and confidence >= threshold."""
        confidence = pred.confidence
        if pred.valid and pred.confidence >= self.threshold:
            return Decision(pred.skill, pred.args or {}, confidence, "student", None, pred.latency_ms)
        reason = pred.error or pred.label_error or BELOW_THRESHOLD
        detail = pred.detail or (f"confidence {pred.confidence:.3f} < threshold {self.threshold:g}"
                                 if reason == BELOW_THRESHOLD else "")
        proposal = {"skill": pred.skill, "args": pred.args} if pred.skill is not None else None
        return Decision(FALLBACK_SKILL, {}, confidence, "fallback", reason, pred.latency_ms, proposal=proposal,
                        detail=detail)

    def _answer(self, text: str, decision: Decision) -> None:
        if self.fallback is None:
            return
        try:
            decision.reply = self.fallback.answer(text)
        except Exception as err:  # noqa: BLE001 -- the chat model being down is reported, not raised
            extra = f"fallback chat failed: {type(err).__name__}: {err}"
            decision.detail = f"{decision.detail}; {extra}" if decision.detail else extra

    def _log(self, text: str, decision: Decision) -> None:
        if self.log is None:
            return
        self.log.append({"text": text, "skill": decision.skill, "args": decision.args,
                         "confidence": decision.confidence, "source": decision.source, "reason": decision.reason,
                         "latency_ms": decision.latency_ms, "model": getattr(self.backend, "model_version", "?"),
                         "proposal": decision.proposal})


# ---- CLI ----------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m distill route", description=__doc__.split("\n\n")[0])
    parser.add_argument("text", nargs="+", help="what the user said")
    parser.add_argument("--student", default=str(DEFAULT_STUDENT), help="student dir or student.json")
    parser.add_argument("--gguf", default=str(DEFAULT_GGUF), help="GGUF file (llama-cpp-python backend)")
    parser.add_argument("--ollama", help="Ollama base URL, e.g. http://orin.local:11434 (instead of --gguf)")
    parser.add_argument("--model", help="Ollama model name (with --ollama)")
    parser.add_argument("--threshold", type=float, help="override the calibrated threshold")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds for the student")
    parser.add_argument("--fallback-config", help="OpenAI-compatible chat endpoint, teacher.json format")
    parser.add_argument("--persona", default="config/persona.md", help="system prompt of the fallback chat")
    parser.add_argument("--log", help="decision log path, or 'off' (default: $DISTILL_DECISION_LOG or "
                                      "data/decisions/decisions.jsonl)")
    parser.add_argument("--raw", action="store_true", help="also print the raw prediction")
    parser.add_argument("--pretty", action="store_true", help="indented JSON for people (default: one compact line, "
                                                               "what a conductor reads)")
    return parser


@cli
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    student = args.student if is_student(args.student) else None
    if student is None and args.student != str(DEFAULT_STUDENT):
        fail(student_json_path(args.student), "student.json not found")
    if student is None:
        print(f"note: {NO_STUDENT_HINT}", file=sys.stderr)
    fallback = None
    if args.fallback_config:
        persona = args.persona if args.persona and Path(args.persona).is_file() else None
        fallback = FallbackChat.from_config(args.fallback_config, persona)
    decision_log = DecisionLog.from_env() if args.log is None else (
        None if args.log.lower() == "off" else DecisionLog(args.log))
    router = Router.from_student(student, gguf=args.gguf, ollama=args.ollama, model=args.model,
                                 threshold=args.threshold, fallback=fallback, log=decision_log, timeout_s=args.timeout)
    # argv bytes that are not UTF-8 arrive as lone surrogates: make them U+FFFD so every later step can encode them
    text = " ".join(args.text).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    decision = router.route(text)
    out = decision.to_dict()
    if args.raw:
        out["raw"] = router.last_prediction.to_dict()
    print(json.dumps(out, ensure_ascii=False, indent=2 if args.pretty else None,
                     separators=None if args.pretty else (",", ":")))


if __name__ == "__main__":
    main()
