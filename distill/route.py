"""The runtime: route an utterance with the router student, act only when sure, else fall back.

    python -m distill.route "turn your eyes red"                       # GGUF in llama-cpp-python
    python -m distill.route --ollama http://orin:11434 --model router-student "look left"

A backend turns text into a `RawPrediction` (what the model said, parsed and checked, with a confidence);
the `Router` turns that into a `Decision`: `source="student"` when the label is valid and the confidence
reaches the threshold, else `source="fallback"` with the reason, answered by the big chat model.

Confidence (documented in docs/runtime.md): the probability the student gives to the skill name it chose,
  confidence = prod_i p(t_i | prompt, t_<i)  over the output tokens t_i that overlap the bytes of the skill
  name inside `"skill":"<name>"` (plus the token carrying the closing quote when the name is a prefix of
  another skill's name, so that "stop" is not credited with the mass of "stop_all").
p is the model's own softmax over the whole vocabulary at temperature 1 before the grammar mask: mass the
model puts on tokens the grammar forbids counts as doubt. Each p comes from the chosen token's log-probability
(llama.cpp: computed from the logits row; Ollama: `logprob`, else looked up in `top_logprobs`).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import re
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from .decisions import DecisionLog
from .errors import cli, fail
from .fileio import read_json
from .skills import DEFAULT_CATALOG, FALLBACK_SKILL, Catalog, Label, LabelError, load_catalog

logger = logging.getLogger("distill.route")

DEFAULT_STUDENT = Path("models/router_student_mlx")
DEFAULT_GGUF = Path("gguf/router-student.gguf")
DEFAULT_THRESHOLD = 0.5  # used only until `make calibrate` stores one in student.json
NEVER_ACT = 1.01  # a threshold no confidence reaches: everything falls back
DEFAULT_STOP = ("<|im_end|>",)
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Machine-readable reasons a decision fell back (LabelError adds not_an_object, extra_keys, bad_args, unknown_skill).
BELOW_THRESHOLD = "below_threshold"
INVALID_JSON = "invalid_json"
TIMEOUT = "timeout"
BACKEND_DOWN = "backend_down"
BACKEND_ERROR = "backend_error"
NO_LOGPROBS = "no_logprobs"


# ---- what a backend returns ---------------------------------------------------------------------------


@dataclass
class Piece:
    """One output token: its bytes, its log-probability, and the top alternatives (text, logprob)."""

    data: bytes
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)
    token: int | None = None  # the token id, where the backend knows it (llama.cpp)


@dataclass
class RawPrediction:
    """What the student said for one text, threshold-free: the evaluator's and the export gate's unit."""

    text: str
    output: str = ""
    valid_json: bool = False
    skill: str | None = None
    args: dict | None = None
    label_error: str | None = None  # LabelError reason (unknown_skill, bad_args, ...) or invalid_json
    confidence: float = 0.0
    latency_ms: float = 0.0
    n_tokens: int = 0
    error: str | None = None  # timeout | backend_down | backend_error | no_logprobs
    detail: str = ""

    @property
    def valid(self) -> bool:
        """A label the robot could act on (valid JSON, known skill, args pass the schema, no backend error)."""
        return self.error is None and self.label_error is None and self.skill is not None

    @property
    def label(self) -> Label | None:
        return Label(self.skill, self.args or {}) if self.valid else None

    def to_dict(self) -> dict:
        return asdict(self)


def interpret(text: str, output: str, pieces: list[Piece], catalog: Catalog, latency_ms: float) -> RawPrediction:
    """Parse and check the model's output; compute the skill confidence from the token log-probabilities."""
    pred = RawPrediction(text=text, output=output, latency_ms=latency_ms, n_tokens=len(pieces))
    try:
        obj = json.loads(output)
        pred.valid_json = True
    except (json.JSONDecodeError, ValueError) as err:
        pred.label_error, pred.detail = INVALID_JSON, f"{err.msg if hasattr(err, 'msg') else err}: {output[:80]!r}"
        return pred
    if isinstance(obj, dict):
        pred.skill = obj.get("skill") if isinstance(obj.get("skill"), str) else None
        pred.args = obj.get("args") if isinstance(obj.get("args"), dict) else None
    try:
        label = catalog.validate(obj)
        pred.skill, pred.args = label.skill, label.args
    except LabelError as err:
        pred.label_error, pred.detail = err.reason, err.detail
    if pred.skill is not None:
        pred.confidence = skill_confidence(pieces, pred.skill, catalog.names)
    return pred


_SKILL_KEY = re.compile(rb'"skill"\s*:\s*"')


def skill_confidence(pieces: list[Piece], skill: str, names: list[str] | tuple[str, ...] = ()) -> float:
    """Product of the probabilities of the tokens that spell `skill` in `"skill":"<skill>"` (see module doc)."""
    data = b"".join(p.data for p in pieces)
    match = _SKILL_KEY.search(data)
    if match is None:
        return 0.0
    start, name = match.end(), skill.encode()
    end = start + len(name)
    if data[start:end] != name:
        return 0.0
    if any(other != skill and other.startswith(skill) for other in names):
        end += 1  # the closing quote tells "stop" from "stop_all"
    logprob, offset = 0.0, 0
    for piece in pieces:
        lo, offset = offset, offset + len(piece.data)
        if offset > start and lo < end:
            logprob += piece.logprob
    return math.exp(logprob) if logprob > -math.inf else 0.0


def failed(text: str, error: str, detail: str, started: float) -> RawPrediction:
    return RawPrediction(text=text, error=error, detail=detail, latency_ms=(time.perf_counter() - started) * 1000)


class Backend(Protocol):
    catalog: Catalog
    model_version: str

    def predict(self, text: str, system_prompt: str | None = None) -> RawPrediction: ...


# ---- prompt and grammar -------------------------------------------------------------------------------


def render_chat(template: str | None, system_prompt: str | None, text: str, bos: str = "", eos: str = "") -> str:
    """The prompt exactly as the HF chat template renders one system + one user turn + generation prompt."""
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": text}
    ]
    return _compiled(template or CHATML).render(messages=messages, add_generation_prompt=True, bos_token=bos,
                                                eos_token=eos)


@functools.lru_cache(maxsize=8)
def _compiled(template: str):
    """Jinja set up as transformers does for chat templates (sandboxed, trim/lstrip blocks); compiled once."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda value, indent=None: json.dumps(value, ensure_ascii=False, indent=indent)

    def raise_exception(message: str):
        raise ValueError(message)

    env.globals["raise_exception"] = raise_exception
    return env.from_string(template)


def label_grammar(catalog: Catalog) -> str:
    """GBNF for a label, from the catalog's JSON schema, with one optional leading whitespace character.

    Tokenizers fold a leading space into the first token (` {`); a grammar that starts strictly at `{` would
    force an unlikely token and derail the answer (docs/runtime.md, NOTES.md).
    """
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    gbnf = json_schema_to_gbnf(json.dumps(catalog.label_schema()))
    gbnf = re.sub(r"^root ::=", "label ::=", gbnf, count=1, flags=re.M)
    return gbnf + '\nroot ::= [ \\t\\n]? label\n'


def brief_system_prompt(catalog: Catalog) -> str:
    """A short routing prompt for a model with no student.json (the untrained base in tests and benchmarks)."""
    lines = [f"- {s.name}: {s.description}" for s in catalog.skills.values()]
    return (
        'Route the user\'s request to one skill. Answer only with JSON {"skill": name, "args": {...}}.\nSkills:\n'
        + "\n".join(lines)
    )


# ---- llama-cpp-python backend (a GGUF file) -------------------------------------------------------------


class LlamaCppBackend:
    """A GGUF in llama-cpp-python: chat template, catalog grammar, greedy decoding, per-token log-probabilities.

    `predict(text)` is the evaluator's entry point (no threshold). We drive `Llama.generate` ourselves and read
    the logits row of each step (`llama_get_logits_ith(ctx, -1)`): the same log-probabilities as
    `create_completion(logprobs=k)` with `logits_all=True`, without computing vocabulary-wide logits for every
    prompt token and without its per-token Python sort of the whole vocabulary.

    The part of the prompt every request shares (system turn + user-turn header) is evaluated once, alone,
    and kept in the KV cache; each request evaluates only its own suffix on top of it. Always the same split,
    so a text gets the same confidence whatever was routed before it (llama.cpp's numerics depend slightly on
    how a prompt is batched) and calibration, evaluation and runtime agree.
    """

    def __init__(
        self,
        gguf: str | Path,
        catalog: Catalog,
        *,
        system_prompt: str | None = None,
        chat_template: str | None = None,
        stop: list[str] | tuple[str, ...] = DEFAULT_STOP,
        constrained: bool = True,
        timeout_s: float = 10.0,
        max_tokens: int = 96,
        top_logprobs: int = 5,
        n_ctx: int = 1024,
        n_threads: int | None = None,
        model_version: str | None = None,
    ):
        self.gguf = Path(gguf)
        if not self.gguf.is_file():
            fail(self.gguf, "GGUF file not found (make gguf builds it)")
        self.catalog = catalog
        self.system_prompt = system_prompt if system_prompt is not None else brief_system_prompt(catalog)
        self.stop = tuple(stop)
        self.timeout_s = timeout_s
        self.max_tokens = max_tokens
        self.top_logprobs = top_logprobs
        self.llm = load_llama(self.gguf, n_ctx=n_ctx, n_threads=n_threads)
        meta = self.llm.metadata
        self.chat_template = chat_template or meta.get("tokenizer.chat_template") or CHATML
        self._bos = self._token_text(int(meta.get("tokenizer.ggml.bos_token_id", -1)))
        self._eos = self._token_text(self.llm.token_eos())
        self._add_bos = meta.get("tokenizer.ggml.add_bos_token") == "true"
        self._stop_ids = {self.llm.token_eos()} | self._single_token_ids(self.stop)
        self.grammar_text = label_grammar(catalog) if constrained else None
        self._grammar = None
        if self.grammar_text:
            from llama_cpp import LlamaGrammar

            self._grammar = LlamaGrammar.from_string(self.grammar_text, verbose=False)
        self.model_version = model_version or gguf_version(self.gguf)
        self._lock = threading.Lock()  # one Llama context: one request at a time
        self._prefixes: dict[str, list[int]] = {}
        self.last_pieces: list[Piece] = []  # of the latest predict(), for debugging and tests

    @classmethod
    def from_student(cls, student: str | Path, gguf: str | Path, catalog: Catalog | None = None,
                     **kwargs) -> LlamaCppBackend:
        spec = load_student(student)
        catalog = catalog or student_catalog(spec)
        version = f"{spec['name']}:{gguf_version(Path(gguf))}"
        return cls(gguf, catalog, system_prompt=spec["system_prompt"], chat_template=spec.get("chat_template"),
                   stop=spec.get("stop") or DEFAULT_STOP, model_version=version, **kwargs)

    def prompt_tokens(self, text: str, system_prompt: str | None = None) -> list[int]:
        prompt = render_chat(self.chat_template, self.system_prompt if system_prompt is None else system_prompt,
                             text, self._bos, self._eos)
        add_bos = self._add_bos and not (self._bos and prompt.startswith(self._bos))
        return self.llm.tokenize(prompt.encode(), add_bos=add_bos, special=True)

    def shared_prefix(self, system_prompt: str | None = None) -> list[int]:
        """The prompt tokens every user text shares (longest common prefix of a few probe texts)."""
        probes = [self.prompt_tokens(t, system_prompt) for t in ("x", "Y", "1", "?")]
        size = 0
        while all(len(p) > size for p in probes) and len({p[size] for p in probes}) == 1:
            size += 1
        return probes[0][:size]

    def _prime(self, tokens: list[int], system_prompt: str) -> None:
        """Leave exactly the shared prefix in the KV cache (evaluated alone once), or nothing if it does not apply."""
        llm, prefix = self.llm, self._prefixes[system_prompt]
        if not prefix or tokens[: len(prefix)] != prefix:
            llm.reset()
            return
        if llm.n_tokens < len(prefix) or list(llm.input_ids[: len(prefix)]) != prefix:
            llm.reset()
            llm.eval(prefix)
        llm.n_tokens = len(prefix)  # generate() keeps this prefix and evaluates the rest as one batch

    def predict(self, text: str, system_prompt: str | None = None) -> RawPrediction:
        started = time.perf_counter()
        with self._lock:
            try:
                system_prompt = self.system_prompt if system_prompt is None else system_prompt
                if system_prompt not in self._prefixes:
                    self._prefixes[system_prompt] = self.shared_prefix(system_prompt)
                tokens = self.prompt_tokens(text, system_prompt)
                self._prime(tokens, system_prompt)
                output, pieces, timed_out = self._decode(tokens, started + self.timeout_s)
                self.last_pieces = pieces
            except Exception as err:  # noqa: BLE001 -- llama.cpp errors (context overflow, decode failure)
                return failed(text, BACKEND_ERROR, f"{type(err).__name__}: {err}", started)
        latency = (time.perf_counter() - started) * 1000
        if timed_out:
            pred = failed(text, TIMEOUT, f"no complete answer within {self.timeout_s:g}s", started)
            pred.output, pred.n_tokens = output, len(pieces)
            return pred
        return interpret(text, output, pieces, self.catalog, latency)

    def _decode(self, tokens: list[int], deadline: float) -> tuple[str, list[Piece], bool]:
        import numpy as np

        llm, pieces, data = self.llm, [], b""
        steps = llm.generate(tokens, temp=0.0, repeat_penalty=1.0, grammar=self._grammar)
        try:
            for token in steps:
                if token in self._stop_ids:
                    break
                logits = np.ctypeslib.as_array(_last_logits(llm), shape=(llm.n_vocab(),))
                pieces.append(self._piece(token, logits, tokens, pieces))
                data += pieces[-1].data
                if any(s.encode() in data for s in self.stop) or len(pieces) >= self.max_tokens:
                    break
                if time.perf_counter() > deadline:
                    return data.decode("utf-8", "replace"), pieces, True
        finally:
            steps.close()
        output = data.decode("utf-8", "replace")
        for s in self.stop:
            output = output.split(s)[0]
        return output, pieces, False

    def _piece(self, token: int, logits, prompt: list[int], pieces: list[Piece]) -> Piece:
        import numpy as np

        peak = float(logits.max())
        log_z = peak + math.log(float(np.exp(logits - peak).sum()))
        top = np.argpartition(-logits, self.top_logprobs)[: self.top_logprobs] if self.top_logprobs else []
        top = sorted(top, key=lambda i: -logits[i])
        data = self.llm.detokenize([token], prev_tokens=prompt + [p.token for p in pieces])
        alternatives = [(self.llm.detokenize([int(i)]).decode("utf-8", "replace"), float(logits[i]) - log_z)
                        for i in top]
        return Piece(data, float(logits[token]) - log_z, alternatives, token)

    def _token_text(self, token_id: int) -> str:
        if token_id < 0:
            return ""
        return self.llm.detokenize([token_id], special=True).decode("utf-8", "replace")

    def _single_token_ids(self, stops: tuple[str, ...]) -> set[int]:
        ids = set()
        for stop in stops:
            toks = self.llm.tokenize(stop.encode(), add_bos=False, special=True)
            if len(toks) == 1:
                ids.add(toks[0])
        return ids


def load_llama(gguf: str | Path, n_ctx: int = 1024, n_threads: int | None = None, **kwargs):
    """A quiet llama-cpp-python model, AMX-safe (distill.llamacpp), on half the cores by default.

    Half, not all: llama.cpp's OpenMP threads spin at barriers, and when another process holds a core they
    wait for each other. Measured on our 2-core VM with SmolLM2 Q4_1 and other work running: 1 thread decodes
    a token in 21 ms, 2 threads in 1448 ms.
    """
    import os

    from .llamacpp import load_llama as load_safely

    if n_threads is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        n_threads = max(1, cores // 2)
    kwargs.setdefault("verbose", False)
    return load_safely(gguf, n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads, **kwargs)


def _last_logits(llm):
    import llama_cpp

    return llama_cpp.llama_get_logits_ith(llm.ctx, -1)


def gguf_version(gguf: Path) -> str:
    """`<file name>@<sha256 prefix>` from the export's sidecar `<name>.gguf.sha256`, else the file's mtime."""
    sidecar = gguf.with_name(gguf.name + ".sha256")
    if sidecar.is_file():
        digest = sidecar.read_text().split()[0] if sidecar.read_text().split() else ""
        if digest:
            return f"{gguf.name}@{digest[:12]}"
    try:
        return f"{gguf.name}@mtime{int(gguf.stat().st_mtime)}"
    except OSError:
        return gguf.name


# ---- Ollama backend (the robot) ---------------------------------------------------------------------------


class OllamaBackend:
    """Ollama's /api/chat with `format` = the label schema, temperature 0, and token log-probabilities.

    Needs an Ollama with logprobs support (`logprobs`/`top_logprobs` in /api/chat, late 2025); an answer
    without them falls back with reason `no_logprobs`. `system_prompt=None` leaves the Modelfile's SYSTEM.
    """

    def __init__(self, url: str, model: str, catalog: Catalog, *, system_prompt: str | None = None,
                 stop: list[str] | tuple[str, ...] = DEFAULT_STOP, timeout_s: float = 10.0, max_tokens: int = 96,
                 top_logprobs: int = 5, keep_alive: str = "30m"):
        import requests

        self.url = url.rstrip("/")
        self.model = model
        self.catalog = catalog
        self.system_prompt = system_prompt
        self.stop = list(stop)
        self.timeout_s = timeout_s
        self.max_tokens = max_tokens
        self.top_logprobs = top_logprobs
        self.keep_alive = keep_alive
        self.model_version = f"ollama:{model}"
        self._session = requests.Session()

    @classmethod
    def from_student(cls, student: str | Path, url: str, model: str, catalog: Catalog | None = None,
                     **kwargs) -> OllamaBackend:
        spec = load_student(student)
        return cls(url, model, catalog or student_catalog(spec), system_prompt=spec["system_prompt"],
                   stop=spec.get("stop") or DEFAULT_STOP, **kwargs)

    def request_body(self, text: str, system_prompt: str | None = None) -> dict:
        system = self.system_prompt if system_prompt is None else system_prompt
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
        return {
            "model": self.model,
            "messages": messages,
            "stream": False,
            "format": self.catalog.label_schema(),
            "options": {"temperature": 0, "num_predict": self.max_tokens, "stop": self.stop},
            "logprobs": True,
            "top_logprobs": self.top_logprobs,
            "keep_alive": self.keep_alive,
        }

    def predict(self, text: str, system_prompt: str | None = None) -> RawPrediction:
        import requests

        started = time.perf_counter()
        try:
            response = self._session.post(f"{self.url}/api/chat", json=self.request_body(text, system_prompt),
                                          timeout=self.timeout_s)
        except requests.Timeout:
            return failed(text, TIMEOUT, f"no answer from {self.url} within {self.timeout_s:g}s", started)
        except requests.ConnectionError as err:
            return failed(text, BACKEND_DOWN, f"{self.url}: {type(err).__name__}", started)
        except requests.RequestException as err:
            return failed(text, BACKEND_ERROR, f"{self.url}: {err}", started)
        latency = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            return failed(text, BACKEND_ERROR, f"HTTP {response.status_code}: {response.text[:120]}", started)
        try:
            body = response.json()
            output = body["message"]["content"]
            entries = body.get("logprobs")
        except (ValueError, KeyError, TypeError) as err:
            return failed(text, BACKEND_ERROR, f"unexpected answer shape: {err}", started)
        if not isinstance(output, str):
            return failed(text, BACKEND_ERROR, "message.content is not a string", started)
        pieces = ollama_pieces(entries) if isinstance(entries, list) else None
        pred = interpret(text, output, pieces or [], self.catalog, latency)
        if pieces is None and pred.label_error is None:
            pred.error, pred.detail = NO_LOGPROBS, "the Ollama answer has no logprobs (needs a newer Ollama)"
        return pred


def ollama_pieces(entries: list) -> list[Piece]:
    """Ollama's `logprobs` list ({token, logprob, bytes, top_logprobs}) as Pieces."""
    pieces = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        token = entry.get("token", "")
        raw = entry.get("bytes")
        data = bytes(raw) if isinstance(raw, list) else str(token).encode()
        top = [(t.get("token", ""), float(t.get("logprob", -math.inf))) for t in entry.get("top_logprobs") or []
               if isinstance(t, dict)]
        logprob = entry.get("logprob")
        if not isinstance(logprob, (int, float)):
            logprob = next((lp for tok, lp in top if tok == token), -math.inf)
        pieces.append(Piece(data, float(logprob), top))
    return pieces


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
        from .config import load_teacher_config

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

    @classmethod
    def from_student(cls, student: str | Path | None, *, gguf: str | Path | None = None, ollama: str | None = None,
                     model: str | None = None, threshold: float | None = None, fallback: FallbackChat | None = None,
                     log: DecisionLog | None = None, catalog: Catalog | None = None, **backend_kwargs) -> Router:
        """A router for a trained student (student dir or student.json) served from a GGUF or by Ollama.

        With `student=None` (no trained student yet) it routes with the catalog's brief prompt.
        """
        spec = load_student(student) if student is not None else None
        catalog = catalog or (student_catalog(spec) if spec else load_catalog(DEFAULT_CATALOG))
        system = spec["system_prompt"] if spec else brief_system_prompt(catalog)
        stop = (spec.get("stop") if spec else None) or DEFAULT_STOP
        if ollama:
            if not model:
                fail("--model", "the Ollama model name is required with --ollama")
            backend = OllamaBackend(ollama, model, catalog, system_prompt=system, stop=stop, **backend_kwargs)
        else:
            gguf = Path(gguf or DEFAULT_GGUF)
            version = f"{spec['name']}:{gguf_version(gguf)}" if spec else None
            backend = LlamaCppBackend(gguf, catalog, system_prompt=system, stop=stop, model_version=version,
                                      chat_template=spec.get("chat_template") if spec else None, **backend_kwargs)
        if threshold is None:
            threshold = spec.get("threshold") if spec else None
        if threshold is None:
            logger.warning("no calibrated threshold (run make calibrate); using %s", DEFAULT_THRESHOLD)
            threshold = DEFAULT_THRESHOLD
        return cls(backend, catalog, system, threshold, fallback=fallback, log=log)

    def route(self, text: str) -> Decision:
        """Never raises on bad model output or a failing backend, chat model or log."""
        started = time.perf_counter()
        try:
            pred = self.backend.predict(text, self.system_prompt)
        except Exception as err:  # noqa: BLE001 -- a backend bug must not take the conductor down
            pred = failed(text, BACKEND_ERROR, f"{type(err).__name__}: {err}", started)
        self.last_prediction = pred
        decision = self.decide(pred)
        decision.student_ms = round(pred.latency_ms, 1)
        if decision.skill == FALLBACK_SKILL:
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


# ---- student.json -----------------------------------------------------------------------------------------


def student_json_path(student: str | Path) -> Path:
    path = Path(student)
    return path / "student.json" if path.is_dir() or path.suffix != ".json" else path


def load_student(student: str | Path) -> dict:
    """student.json (or a student dir holding it), with the fields the runtime needs checked."""
    path = student_json_path(student)
    spec = read_json(path)
    if not isinstance(spec, dict):
        fail(path, "expected a JSON object")
    if not isinstance(spec.get("system_prompt"), str):
        fail(path, "missing or not a string", "system_prompt")
    for key in ("chat_template", "name"):
        if spec.get(key) is not None and not isinstance(spec[key], str):
            fail(path, "not a string", key)
    spec.setdefault("name", path.parent.name)
    stop = spec.get("stop")
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        fail(path, "must be a list of strings", "stop")
    threshold = spec.get("threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))):
        fail(path, "must be a number or null", "threshold")
    spec["_path"] = str(path)
    return spec


def student_catalog(spec: dict) -> Catalog:
    """The catalog the student was trained on; refuse one that changed since (its hash is in student.json)."""
    name = spec.get("catalog") or str(DEFAULT_CATALOG)
    path = Path(name)
    if not path.is_file() and not path.is_absolute():
        path = DEFAULT_CATALOG.parent.parent / name  # relative to the repository
    catalog = load_catalog(path)
    expected = spec.get("catalog_hash")
    if expected and expected != catalog.hash:
        fail(spec["_path"], f"the student was trained on catalog {expected}, {path} is now {catalog.hash}: retrain",
             "catalog_hash")
    return catalog


# ---- CLI ----------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m distill.route", description=__doc__.split("\n\n")[0])
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
    return parser


@cli
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    student = args.student if student_json_path(args.student).is_file() else None
    if student is None and args.student != str(DEFAULT_STUDENT):
        fail(student_json_path(args.student), "student.json not found")
    gguf = Path(args.gguf)
    if not args.ollama and not gguf.is_file() and student is None and args.gguf == str(DEFAULT_GGUF):
        from .offline_base import smollm2_gguf

        gguf = smollm2_gguf()  # nothing trained yet: show the mechanics on the untrained base
        print(f"note: no student yet; routing with the untrained base {gguf.name}", file=sys.stderr)
    fallback = None
    if args.fallback_config:
        persona = args.persona if args.persona and Path(args.persona).is_file() else None
        fallback = FallbackChat.from_config(args.fallback_config, persona)
    decision_log = DecisionLog.from_env() if args.log is None else (
        None if args.log.lower() == "off" else DecisionLog(args.log))
    router = Router.from_student(student, gguf=gguf, ollama=args.ollama, model=args.model, threshold=args.threshold,
                                 fallback=fallback, log=decision_log, timeout_s=args.timeout)
    text = " ".join(args.text)
    decision = router.route(text)
    out = decision.to_dict()
    if args.raw:
        out["raw"] = router.last_prediction.to_dict()
    print(json.dumps(out, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
