"""Backends: turn a text into a `RawPrediction` (what the student said, parsed, checked, with a confidence).

- `LlamaCppBackend`: a GGUF in llama-cpp-python (the evaluator, the export gate, calibration, and a robot
  that serves the GGUF itself);
- `OllamaBackend`: Ollama's /api/chat (the robot).

Confidence (documented in docs/runtime.md): the probability the student gives to what the robot will act on,
the skill and the argument values it chose freely,
  confidence = prod_i p(t_i | prompt, t_<i)  over the output tokens t_i that overlap
    - the bytes of the skill name inside `"skill":"<name>"` (plus the closing quote when the name is a prefix
      of another skill's name, so that "stop" is not credited with the mass of "stop_all"), and
    - each argument value inside `"args":{...}` with the byte that ends it (a string's closing quote: "New"
      vs "New York"; the `,` or `}` after a number: 5 vs 50).
Keys and punctuation are left out: the grammar forces them. p is the model's own softmax over the whole
vocabulary at temperature 1 before the grammar mask: mass the model puts on tokens the grammar forbids counts as
doubt. Except inside a number the request holds (`x-copy: number`, Catalog.label_schema(text)): there p is
renormalized over the top alternatives that keep the value one of the request's own numbers
(grounded_logprob): a model that wants "25" for "count down 2 minutes" is not in doubt, the request allows no
value but 2; without it every such correct "2" scored ~0.001. Held strings keep the raw p: mass on words the
request does not hold is doubt worth keeping ("Good morning, droid!" -> weather "Droid" scored 0.000 raw, 0.977
renormalized; docs/runtime.md). A string value is a choice of value, not of bytes: its p also holds the top
alternatives that spell the same value up to ASCII letter case (a space before its first letter included:
spelling_logprob). Measured on a small-set student: `What's the weather like in Lagos?` -> "L" 0.44, "lag" 0.42,
" Lag" 0.13, one place spelled three ways, scored 0.42 where the skill alone was 1.0; a weather request's copied
city was the commonest correct label under the threshold. Each p comes from the chosen token's log-probability
(llama.cpp: computed from the logits row; Ollama: `logprob`, else looked up in `top_logprobs`). Measured on the demo student
(docs/runtime.md): the skill name alone gave args slips a confidence of 0.999; with the values included they
sit with the other doubtful labels.
"""

from __future__ import annotations

import ctypes
import json
import math
import re
import threading
import time
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from ..errors import DistillError
from ..prompting import CHATML, brief_route_prompt, chat_messages, label_grammar, render_chat
from ..skills import Catalog, Label, LabelError
from ..student import StudentSpec
from .llamacpp import load_llama, parallel_contexts

DEFAULT_STOP = ("<|im_end|>",)
_USER_SLOT = "\ue000user text\ue000"  # private-use characters: stands for the user's text while rendering
# Machine-readable reasons a prediction failed (LabelError adds not_an_object, extra_keys, bad_args, unknown_skill).
INVALID_JSON = "invalid_json"
TIMEOUT = "timeout"
BACKEND_DOWN = "backend_down"
BACKEND_ERROR = "backend_error"
NO_LOGPROBS = "no_logprobs"
BAD_MODEL = "bad_model"  # the GGUF is missing, corrupt or truncated
NO_TOKENIZER = "no_tokenizer"  # the GGUF holds no vocabulary

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
    confidence: float = 0.0  # label_confidence: the skill and the argument values
    skill_confidence: float = 0.0  # the skill name alone (diagnostics, calibration report)
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
        options = grounded_options(catalog, text, pred.skill)
        pred.confidence = label_confidence(pieces, pred.skill, catalog.names, options)
        pred.skill_confidence = skill_confidence(pieces, pred.skill, catalog.names)
    return pred


_SKILL_KEY = re.compile(rb'"skill"\s*:\s*"')
_ARGS_OPEN = re.compile(rb'"args"\s*:\s*\{')
_WHITESPACE = b" \t\r\n"
_SCALAR = re.compile(rb"-?[0-9][0-9.eE+\-]*|true|false|null")


def skill_span(data: bytes, skill: str, names: list[str] | tuple[str, ...] = ()) -> tuple[int, int] | None:
    """Byte span of the skill name in `"skill":"<skill>"` (+ the closing quote when the name is a prefix of
    another skill's name, so "stop" is not credited with the mass of "stop_all"); None if it is not there."""
    match = _SKILL_KEY.search(data)
    if match is None:
        return None
    start, name = match.end(), skill.encode()
    end = start + len(name)
    if data[start:end] != name:
        return None
    if any(other != skill and other.startswith(skill) for other in names):
        end += 1
    return start, end


def args_value_spans(data: bytes) -> list[tuple[int, int]] | None:
    """Byte spans of the values inside `"args":{...}`, each with the byte that ends it (args_value_items
    without the keys)."""
    items = args_value_items(data)
    return None if items is None else [(start, end) for _, start, end in items]


def args_value_items(data: bytes) -> list[tuple[str, int, int]] | None:
    """(key, start, end) of each value inside `"args":{...}`, its byte span with the byte that ends it.

    A string value spans its characters and its closing quote (where a free text stops is a choice: "New" vs
    "New York"); a number or literal spans its characters and the `,`/`}` after it (5 vs 50). Keys and
    punctuation are not spans: the grammar forces them. None when the args object cannot be read (then the
    caller counts every token after the skill: doubt we cannot place is still doubt).
    """
    match = _ARGS_OPEN.search(data)
    if match is None:
        return None
    spans, i = [], match.end()
    try:
        while True:
            i = _skip_space(data, i)
            if data[i:i + 1] == b"}":
                return spans
            if data[i:i + 1] == b",":
                i = _skip_space(data, i + 1)
            key_at = i
            i = _skip_space(data, _string_end(data, i))  # the key
            key = json.loads(data[key_at:i].strip())
            if data[i:i + 1] != b":":
                return None
            i = _skip_space(data, i + 1)
            end = _value_end(data, i)
            if data[i:i + 1] == b'"':
                spans.append((key, i + 1, end))  # the characters and the closing quote
            else:
                spans.append((key, i, min(end + 1, len(data))))  # the characters and the byte that ends them
            i = end
    except (IndexError, ValueError, TypeError):
        return None


def _skip_space(data: bytes, i: int) -> int:
    while i < len(data) and data[i] in _WHITESPACE:
        i += 1
    return i


def _string_end(data: bytes, i: int) -> int:
    """Index just past the JSON string that starts at data[i] (a quote)."""
    if data[i:i + 1] != b'"':
        raise ValueError("not a string")
    i += 1
    while True:
        if data[i] == 0x5C:  # backslash: skip the escaped byte
            i += 2
            continue
        if data[i] == 0x22:
            return i + 1
        i += 1


def _value_end(data: bytes, i: int) -> int:
    """Index just past the JSON value that starts at data[i]."""
    head = data[i:i + 1]
    if head == b'"':
        return _string_end(data, i)
    if head in (b"{", b"["):
        depth = 0
        while True:
            if data[i] == 0x22:
                i = _string_end(data, i)
                continue
            depth += data[i] in b"{["
            depth -= data[i] in b"}]"
            i += 1
            if depth == 0:
                return i
    match = _SCALAR.match(data, i)
    if match is None:
        raise ValueError("not a JSON value")
    return match.end()


def decision_spans(data: bytes, skill: str, names: list[str] | tuple[str, ...] = ()) -> list[tuple[int, int]]:
    """The bytes the robot acts on: the skill name and every argument value (see label_confidence)."""
    skill_at = skill_span(data, skill, names)
    if skill_at is None:
        return []
    values = args_value_spans(data)
    if values is None:
        return [skill_at, (skill_at[1], len(data))]
    return [skill_at, *values]


def span_confidence(pieces: list[Piece], spans: list[tuple[int, int]],
                    held: dict[tuple[int, int], list[bytes]] | None = None,
                    strings: set[tuple[int, int]] | frozenset = frozenset()) -> float:
    """Product of the probabilities of the tokens that overlap any span (a token counts once, and whole). A
    token whose first span is in `held` ({span: its allowed spellings}) counts its grounded_logprob instead;
    one whose first span is in `strings` (string values) its spelling_logprob."""
    if not spans:
        return 0.0
    data = b"".join(p.data for p in pieces) if held or strings else b""
    logprob, offset = 0.0, 0
    for piece in pieces:
        lo, offset = offset, offset + len(piece.data)
        hit = [(start, end) for start, end in spans if offset > start and lo < end]
        if not hit:
            continue
        span = start, end = hit[0]
        if held and span in held:
            logprob += grounded_logprob(piece, data[:lo], data[:start], held[span])
        elif span in strings:
            logprob += spelling_logprob(piece, data[:lo], data[:start], data[start:end])
        else:
            logprob += piece.logprob
    return math.exp(logprob) if logprob > -math.inf else 0.0


def label_confidence(pieces: list[Piece], skill: str, names: list[str] | tuple[str, ...] = (),
                     grounded: dict[str, list[bytes]] | None = None) -> float:
    """P(the skill and the argument values the model chose | prompt): what the robot acts on.

    confidence = prod_i p(t_i) over the output tokens t_i that overlap the skill name (as in skill_confidence)
    or an argument value with the byte that ends it (args_value_spans); p is the model's own probability
    before the grammar mask. Forced punctuation and keys are left out: the grammar, not the model, chose them.
    A value in `grounded` ({arg: its allowed spellings, grounded_options}) counts its tokens' grounded_logprob,
    a string value its tokens' spelling_logprob (the value up to letter case).
    """
    data = b"".join(p.data for p in pieces)
    items = args_value_items(data) or []
    held = {(start, end): grounded[key] for key, start, end in items if key in grounded} if grounded else None
    strings = {(start, end) for _, start, end in items if data[start - 1:start] == b'"'}
    return span_confidence(pieces, decision_spans(data, skill, names), held, strings)


def grounded_options(catalog: Catalog, text: str, skill: str) -> dict[str, list[bytes]]:
    """{arg: the spellings of its allowed values, each with the `,` or `}` that ends it} for the number args
    the request holds (`x-copy: number`; strings keep the raw p, see the module docstring)."""
    from ..skills import grounded_values

    if skill not in catalog.skills or "number" not in catalog.skills[skill].copy_args.values():
        return {}
    modes, options = catalog.skills[skill].copy_args, {}
    for arg, values in grounded_values(catalog.skills[skill], text).items():
        if modes[arg] == "number":
            options[arg] = [json.dumps(v).encode() + end for v in values for end in (b",", b"}")]
    return options


def grounded_logprob(piece: Piece, before: bytes, value_start: bytes, options: list[bytes]) -> float:
    """log p of the chosen token among the top alternatives the request allows here: those that keep the
    output (`before` + the token) on one of the value's `options` (after `value_start`, the output up to the
    value). The chosen token counts even when it is not in `top`; with no alternatives known, the raw p."""
    if not piece.top:
        return piece.logprob

    def allowed(data: bytes) -> bool:
        path = before + data
        return any((value_start + o).startswith(path) or path.startswith(value_start + o) for o in options)

    return piece.logprob - mass_with(piece, allowed)


def mass_with(piece: Piece, accepts: Callable[[bytes], bool]) -> float:
    """log of the summed probability of the chosen token and of its top alternatives that `accepts` takes
    (the chosen token is counted once, whether or not `top` lists it)."""
    kept = [lp for tok, lp in piece.top if tok.encode() != piece.data and accepts(tok.encode())]
    peak = max([piece.logprob, *kept])
    return peak + math.log(sum(math.exp(lp - peak) for lp in [piece.logprob, *kept]))


def spelling_logprob(piece: Piece, before: bytes, value_start: bytes, value: bytes) -> float:
    """log of the mass on the chosen token and on the top alternatives that spell the same string `value` (its
    bytes with the closing quote) up to ASCII letter case, with a space before its first letter allowed: "L",
    "lag" and " Lag" all start `Lagos"`, one value; "chen" (for `Munich"`) does not, and stays doubt. `before`
    is the output before this token, `value_start` the output up to the value. An alternative's unseen
    continuation is taken to finish the value (an upper bound, like grounded_logprob's); the grammar decides
    which spelling is written, the model decides which value."""
    if not piece.top:
        return piece.logprob
    target = value.lower()
    first = len(before) <= len(value_start)  # this token starts the value (or the bytes forced before it)

    def same_value(alternative: bytes) -> bool:
        path = before + alternative
        if not path.startswith(value_start):
            return False
        spelled = path[len(value_start):]
        if first and spelled[:1] == b" " and target[:1] != b" ":
            spelled = spelled[1:]
        spelled = spelled.lower()
        return bool(spelled) and (target.startswith(spelled) or spelled.startswith(target))

    return min(0.0, mass_with(piece, same_value))


def skill_confidence(pieces: list[Piece], skill: str, names: list[str] | tuple[str, ...] = ()) -> float:
    """Product of the probabilities of the tokens that spell `skill` in `"skill":"<skill>"` (the skill choice
    alone; the router acts on label_confidence, which also covers the argument values)."""
    span = skill_span(b"".join(p.data for p in pieces), skill, names)
    return span_confidence(pieces, [span] if span else [])


def failed(text: str, error: str, detail: str, started: float) -> RawPrediction:
    return RawPrediction(text=text, error=error, detail=detail, latency_ms=(time.perf_counter() - started) * 1000)


class ModelUnavailable(DistillError):
    """The model cannot be loaded; `reason` is the router's fallback reason (bad_model, no_tokenizer)."""

    def __init__(self, where: str | Path, message: str, reason: str):
        super().__init__(where, message)
        self.reason = reason


def unloadable(gguf: Path, err: Exception) -> ModelUnavailable:
    """Why llama.cpp could not load `gguf`: it says only "Failed to load model", so read the header ourselves."""
    from .gguf_header import HeaderError, gguf_keys, has_tokenizer

    try:
        keys = gguf_keys(gguf)
    except HeaderError as header:
        return ModelUnavailable(gguf, f"not a loadable GGUF ({header}); re-export it with make gguf", BAD_MODEL)
    if not has_tokenizer(keys):
        return ModelUnavailable(gguf, "the GGUF has no tokenizer (tokenizer.ggml.tokens / tokenizer.ggml.model); "
                                      "re-export it with make gguf", NO_TOKENIZER)
    return ModelUnavailable(gguf, f"llama.cpp cannot load it (truncated or corrupt tensor data?): {err}; "
                                  "re-export it with make gguf", BAD_MODEL)


class Unavailable:
    """A backend that cannot answer (no trained student, an unloadable model): every prediction fails with the
    same reason, so the router falls back with it instead of raising."""

    def __init__(self, catalog: Catalog, reason: str, detail: str, model_version: str = "unavailable"):
        self.catalog, self.reason, self.detail, self.model_version = catalog, reason, detail, model_version

    def predict(self, text: str, system_prompt: str | None = None) -> RawPrediction:
        return failed(text, self.reason, self.detail, time.perf_counter())


class Backend(Protocol):
    catalog: Catalog
    model_version: str

    def predict(self, text: str, system_prompt: str | None = None) -> RawPrediction: ...


def predict_many(first: Backend, texts: list[str], *, load_more: Callable[[], Backend] | None = None,
                 workers: int = 1, on_prediction: Callable[[], object] | None = None) -> list[RawPrediction]:
    """Predictions for `texts`, in order, from `first` and up to `workers - 1` more backends made by `load_more`,
    side by side.

    Why: a llama.cpp context decodes one request at a time on half the cores (load_llama), so evaluating a GGUF
    left the other half idle. Two contexts of one thread each score the export gate's test split in about half
    the time on our 2-core VM (docs/demo.md): llama-cpp-python releases the GIL in llama_decode, where 94% of a
    prediction's time goes (cProfile). Both contexts map the same file; each adds its KV cache and buffers.
    """
    predictions: list[RawPrediction | None] = [None] * len(texts)
    pending = iter(range(len(texts)))
    take = threading.Lock()
    errors: list[BaseException] = []

    def work(backend: Backend) -> None:
        try:
            while not errors:
                with take:
                    index = next(pending, None)
                if index is None:
                    return
                predictions[index] = backend.predict(texts[index])
                if on_prediction is not None:
                    on_prediction()
        except BaseException as err:  # noqa: BLE001 -- re-raised by the caller's thread below
            errors.append(err)

    def helper() -> None:
        try:
            backend = load_more()
        except Exception:  # noqa: BLE001 -- no second context (memory?): the others take its share
            return
        work(backend)

    threads = [threading.Thread(target=helper, name=f"predict-{i}", daemon=True)
               for i in range(max(0, min(workers, len(texts)) - 1) if load_more else 0)]
    for thread in threads:
        thread.start()
    work(first)
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return predictions


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
            raise ModelUnavailable(self.gguf, "GGUF file not found (make gguf builds it)", BAD_MODEL)
        # what another_context() opens the same GGUF with
        self._settings = dict(system_prompt=system_prompt, chat_template=chat_template, stop=stop,
                              constrained=constrained, timeout_s=timeout_s, max_tokens=max_tokens,
                              top_logprobs=top_logprobs, n_ctx=n_ctx, n_threads=n_threads, model_version=model_version)
        self.catalog = catalog
        self.system_prompt = system_prompt if system_prompt is not None else brief_route_prompt(catalog)
        self.stop = tuple(stop)
        self.timeout_s = timeout_s
        self.max_tokens = max_tokens
        self.top_logprobs = top_logprobs
        try:
            self.llm = load_llama(self.gguf, n_ctx=n_ctx, n_threads=n_threads)
        except (ValueError, RuntimeError, OSError) as err:  # llama-cpp-python: "Failed to load model from file"
            raise unloadable(self.gguf, err) from None
        meta = self.llm.metadata
        self.chat_template = chat_template or meta.get("tokenizer.chat_template") or CHATML
        self._bos = self._token_text(int(meta.get("tokenizer.ggml.bos_token_id", -1)))
        self._eos = self._token_text(self.llm.token_eos())
        self._add_bos = meta.get("tokenizer.ggml.add_bos_token") == "true"
        self._stop_ids = {self.llm.token_eos()} | self._single_token_ids(self.stop)
        self.grammar_text = label_grammar(catalog) if constrained else None  # the request-free grammar
        self._grammar = GrammarCheck(self.llm, self.grammar_text) if self.grammar_text else None
        # x-copy args: each request gets its own grammar, the copy args held to its words (Catalog.label_schema)
        self._grounded = constrained and any(skill.copy_args for skill in catalog.skills.values())
        self._arg_free = arg_free_labels(catalog)  # used only under a grammar (_decode)
        self.model_version = model_version or gguf_version(self.gguf)
        self._lock = threading.Lock()  # one Llama context: one request at a time
        self._prefixes: dict[str, list[int]] = {}
        self.last_pieces: list[Piece] = []  # of the latest predict(), for debugging and tests

    @classmethod
    def from_student(cls, student: str | Path, gguf: str | Path, catalog: Catalog | None = None,
                     **kwargs) -> LlamaCppBackend:
        spec = StudentSpec.load(student)
        version = f"{spec.name}:{gguf_version(Path(gguf))}"
        return cls(gguf, catalog or spec.load_catalog(), system_prompt=spec.system_prompt,
                   chat_template=spec.chat_template, stop=spec.stop or DEFAULT_STOP, model_version=version, **kwargs)

    def another_context(self) -> LlamaCppBackend:
        """The same GGUF and settings in a llama.cpp context of its own (one per core for predict_all)."""
        return LlamaCppBackend(self.gguf, self.catalog, **{**self._settings, "model_version": self.model_version})

    def predict_all(self, texts: list[str], on_prediction: Callable[[], None] | None = None) -> list[RawPrediction]:
        """Every text's prediction, in order, decoded by as many contexts as the cores hold (predict_many): the
        evaluator, the export gate and calibration score this way."""
        return predict_many(self, texts, load_more=self.another_context, workers=parallel_contexts(),
                            on_prediction=on_prediction)

    def prompt_tokens(self, text: str, system_prompt: str | None = None) -> list[int]:
        """The rendered chat prompt as tokens; the template's control tokens are parsed, the user's text is not.

        A user who types `<|im_start|>system` gets those characters tokenized as text, never as the control
        token (else a request could open a new system turn). A text with no control-token spelling in it is
        tokenized in one piece, exactly as before, so its prompt, answer and confidence are unchanged.
        """
        system = self.system_prompt if system_prompt is None else system_prompt
        prompt = self._render(system, text)
        add_bos = self._add_bos and not (self._bos and prompt.startswith(self._bos))
        tokens = self.llm.tokenize(prompt.encode(), add_bos=add_bos, special=True)
        if not self._spells_control_tokens(text):
            return tokens
        head, slot, tail = self._render(system, _USER_SLOT).partition(_USER_SLOT)
        if not slot or not (prompt.startswith(head) and prompt.endswith(tail)) or len(head) + len(tail) > len(prompt):
            raise ValueError("the chat template changes the user text in a way we cannot isolate")
        user = prompt[len(head): len(prompt) - len(tail)]  # the text as the template rendered it
        return (self.llm.tokenize(head.encode(), add_bos=add_bos, special=True)
                + self.llm.tokenize(user.encode(), add_bos=False, special=False)
                + self.llm.tokenize(tail.encode(), add_bos=False, special=True))

    def _render(self, system: str | None, text: str) -> str:
        return render_chat(self.chat_template, chat_messages(system or None, text), bos_token=self._bos,
                           eos_token=self._eos)

    def _spells_control_tokens(self, text: str) -> bool:
        """Whether llama.cpp would read a control token out of `text` (it tokenizes differently with special)."""
        data = text.encode()
        return (self.llm.tokenize(data, add_bos=False, special=True)
                != self.llm.tokenize(data, add_bos=False, special=False))

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
                output, pieces, timed_out = self._decode(tokens, started + self.timeout_s, self.grammar_for(text))
                self.last_pieces = pieces
            except Exception as err:  # noqa: BLE001 -- llama.cpp errors (context overflow, decode failure)
                return failed(text, BACKEND_ERROR, f"{type(err).__name__}: {err}", started)
        latency = (time.perf_counter() - started) * 1000
        if timed_out:
            pred = failed(text, TIMEOUT, f"no complete answer within {self.timeout_s:g}s", started)
            pred.output, pred.n_tokens = output, len(pieces)
            return pred
        return interpret(text, output, pieces, self.catalog, latency)

    def grammar_for(self, text: str) -> GrammarCheck | None:
        """The grammar a request decodes under: the catalog's, or (x-copy args) one built for this text.

        Building one costs 2-7 ms for 3-17 words (llama-cpp-python's schema-to-GBNF converter, most of it, and
        llama.cpp's grammar parse; docs/runtime.md, Latency)."""
        if not self._grounded:
            return self._grammar
        return GrammarCheck(self.llm, label_grammar(self.catalog, text))

    def _decode(self, tokens: list[int], deadline: float,
                grammar: GrammarCheck | None) -> tuple[str, list[Piece], bool]:
        """Greedy decoding under the catalog grammar, one llama.cpp step per output token, stopping as soon as the
        label object is closed (the grammar allows nothing after it but whitespace and the end).

        The tokens are those `Llama.generate(temp=0, grammar=...)` picks: the most likely token the grammar allows.
        We check the grammar on the likeliest token first (GrammarCheck) instead of masking all 49,152 vocabulary
        entries at every step, which cost ~9 ms a token, 27% of a route (docs/runtime.md, Latency).
        """
        import numpy as np

        llm, pieces, data, closing = self.llm, [], b"", LabelEnd()
        if grammar:
            grammar.reset()
        llm.eval(tokens[llm.n_tokens:])  # after _prime: the request's own suffix, one batch
        while True:
            logits = np.ctypeslib.as_array(_last_logits(llm), shape=(llm.n_vocab(),))
            token = grammar.best(logits) if grammar else int(np.argmax(logits))
            if token in self._stop_ids:
                break
            pieces.append(self._piece(token, logits, tokens, pieces))
            data += pieces[-1].data
            if grammar:
                grammar.accept(token)
            if any(s.encode() in data for s in self.stop) or len(pieces) >= self.max_tokens:
                break
            if grammar and closing.closed(pieces[-1].data):
                break  # the label is complete: what follows could only be whitespace and the end
            tail = forced_tail(data, self._arg_free) if grammar else b""
            if tail:  # an arg-free skill is decided: the rest is syntax the grammar forces, outside the confidence
                pieces.append(Piece(tail, 0.0))
                data += tail
                break
            if time.perf_counter() > deadline:
                return data.decode("utf-8", "replace"), pieces, True
            llm.eval([token])
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


def _last_logits(llm):
    import llama_cpp

    return llama_cpp.llama_get_logits_ith(llm.ctx, -1)


class GrammarCheck:
    """llama.cpp's grammar sampler, asked about a few candidates instead of the whole vocabulary.

    Greedy decoding under a grammar picks the highest-logit token the grammar allows (ties: the lowest id, as
    llama.cpp's greedy sampler). `best` asks the grammar about the argmax alone, then the top 64, then everything:
    the same token as masking the whole vocabulary, found in microseconds when the model already wants an
    allowed token (nearly always, for a trained student).
    """

    TOP = 64

    def __init__(self, llm, grammar_text: str):
        import llama_cpp
        import numpy as np

        self._c = llama_cpp
        self.sampler = llama_cpp.llama_sampler_init_grammar(llm._model.vocab, grammar_text.encode(), b"root")
        if not self.sampler:
            raise ValueError("llama.cpp rejected the label grammar")
        self._finalizer = weakref.finalize(self, llama_cpp.llama_sampler_free, self.sampler)
        self.n_vocab = llm.n_vocab()
        dtype = np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)], align=True)
        self._all = np.zeros(self.n_vocab, dtype=dtype)
        self._all["id"] = np.arange(self.n_vocab, dtype=np.intc)

    def _allowed(self, ids, logits):
        """The grammar's verdict on each id (in order), through llama_sampler_apply on just those candidates."""
        import numpy as np

        rows = self._all[: len(ids)].copy() if len(ids) < self.n_vocab else self._all
        rows["id"] = ids
        rows["logit"] = logits[ids]
        array = self._c.llama_token_data_array(
            data=rows.ctypes.data_as(self._c.llama_token_data_p), size=len(rows), selected=-1, sorted=False)
        self._c.llama_sampler_apply(self.sampler, ctypes.byref(array))
        allowed = np.isfinite(rows["logit"])
        if rows is self._all:
            self._all["id"] = np.arange(self.n_vocab, dtype=np.intc)
        return allowed

    def best(self, logits) -> int:
        import numpy as np

        top = int(np.argmax(logits))
        if self._allowed(np.array([top], dtype=np.intc), logits)[0]:
            return top
        k = min(self.TOP, self.n_vocab - 1)
        part = np.argpartition(-logits, k)[:k]
        order = part[np.lexsort((part, -logits[part]))].astype(np.intc)  # by logit, ties by id
        allowed = self._allowed(order, logits)
        if allowed.any():
            pick = int(order[np.argmax(allowed)])
            if logits[pick] > np.partition(logits, -k - 1)[-k - 1]:  # strictly above everything left out
                return pick
        ids = np.arange(self.n_vocab, dtype=np.intc)
        allowed = self._allowed(ids, logits)
        if not allowed.any():
            raise ValueError("the grammar allows no token here")
        masked = np.where(allowed, logits, -np.inf)
        return int(np.argmax(masked))

    def accept(self, token: int) -> None:
        self._c.llama_sampler_accept(self.sampler, token)

    def reset(self) -> None:
        """Back to the grammar's start (a new label)."""
        self._c.llama_sampler_reset(self.sampler)


def arg_free_labels(catalog: Catalog) -> list[tuple[bytes, int]]:
    """(compact label, bytes of it the model decides) for each skill without args: `{"skill":"<name>` and, when
    the name is a prefix of another skill's (`stop`, `stop_all`), its closing quote, which is then part of the
    confidence (skill_span). The rest, `","args":{}}`, is forced (forced_tail)."""
    opening = Label("", {}).canonical().index('""') + 1  # bytes before the name in the form the student writes
    labels = []
    for name, skill in catalog.skills.items():
        if skill.args_schema.get("properties"):
            continue
        label = Label(name, {}).canonical().encode()
        decided = opening + len(name.encode())
        quoted = any(other != name and other.startswith(name) for other in catalog.names)
        labels.append((label, decided + quoted))
    return labels


def forced_tail(data: bytes, labels: list[tuple[bytes, int]]) -> bytes:
    """The rest of the label when `data` (the output so far) has decided an arg-free skill (arg_free_labels),
    else b"". Under the grammar only that (or whitespace the robot ignores) can follow; none of it counts in the
    confidence, so decoding it step by step cost an arg-free label 5 of its ~9 steps and changed nothing: the
    decode stops and appends it (docs/runtime.md, Latency). Only the compact form the student was trained to
    write is recognised; any other spelling decodes to the end as before."""
    body = data.lstrip(b" \t\n")
    for label, decided in labels:
        if decided <= len(body) < len(label) and label.startswith(body):
            return label[len(body):]
    return b""


class LabelEnd:
    """Feeds on output bytes; `closed` turns true when the first JSON object is complete (strings and escapes
    honoured), i.e. when the label is whole."""

    def __init__(self):
        self.depth, self.in_string, self.escaped, self.opened = 0, False, False, False

    def closed(self, data: bytes) -> bool:
        for byte in data:
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif byte == 0x5C:
                    self.escaped = True
                elif byte == 0x22:
                    self.in_string = False
            elif byte == 0x22:
                self.in_string = True
            elif byte in b"{[":
                self.depth += 1
                self.opened = True
            elif byte in b"}]":
                self.depth -= 1
                if self.opened and self.depth == 0:
                    return True
        return False


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
    """Ollama's /api/chat with `format` = the label schema for this request (Catalog.label_schema(text)),
    temperature 0, and token log-probabilities.

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
        self.last_timings: dict[str, float] = {}  # the server's own durations of the latest answer, in ms

    @classmethod
    def from_student(cls, student: str | Path, url: str, model: str, catalog: Catalog | None = None,
                     **kwargs) -> OllamaBackend:
        spec = StudentSpec.load(student)
        return cls(url, model, catalog or spec.load_catalog(), system_prompt=spec.system_prompt,
                   stop=spec.stop or DEFAULT_STOP, **kwargs)

    def request_body(self, text: str, system_prompt: str | None = None) -> dict:
        system = self.system_prompt if system_prompt is None else system_prompt
        messages = chat_messages(system or None, text)
        return {
            "model": self.model,
            "messages": messages,
            "stream": False,
            "format": self.catalog.label_schema(text),  # x-copy args held to the request's words
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
            if _dropped_mid_request(err):  # it took the request, then went away: not "down", it died on us
                return failed(text, BACKEND_ERROR, f"{self.url}: the connection closed mid-request ({err})", started)
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
        self.last_timings = {f"{key.removesuffix('_duration')}_ms": body[key] / 1e6 for key in
                             ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration")
                             if isinstance(body.get(key), (int, float))}
        if not isinstance(output, str):
            return failed(text, BACKEND_ERROR, "message.content is not a string", started)
        pieces = ollama_pieces(entries) if isinstance(entries, list) else None
        pred = interpret(text, output, pieces or [], self.catalog, latency)
        if pieces is None and pred.label_error is None:
            pred.error, pred.detail = NO_LOGPROBS, "the Ollama answer has no logprobs (needs a newer Ollama)"
        return pred


def _dropped_mid_request(err: Exception) -> bool:
    """A ConnectionError after the request went out (the server closed or reset the connection), as opposed to
    one before it (refused, no route): urllib3 reports the former as a ProtocolError ('Connection aborted.')."""
    from urllib3.exceptions import MaxRetryError, ProtocolError

    cause = err.args[0] if err.args else None
    if isinstance(cause, MaxRetryError):
        cause = cause.reason
    return isinstance(cause, ProtocolError)


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
