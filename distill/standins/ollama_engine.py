"""The stand-in Ollama's runner: one llama.cpp model loaded at a time (like Ollama on a small board), kept
loaded for `keep_alive` after its last request, unloaded by a timer, and reported by /api/ps.

What /api/ps says about memory comes from a setting, because llama-cpp-python here runs on the CPU:
OLLAMA_STANDIN_VRAM = `0` (default: nothing on a GPU, what real Ollama reports on a CPU-only box or a Jetson
whose CUDA libraries it did not find), `all` (fully offloaded: size_vram = size) or a byte count (partial
offload, at most size). The deploy's smoke test reads it to tell a GPU target from a CPU one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import fail
from ..runtime.llamacpp import load_llama
from .ollama import ApiError, grammar_for, now_iso

DEFAULT_KEEP_ALIVE_S = 300.0  # Ollama: 5m unless OLLAMA_KEEP_ALIVE says otherwise
FOREVER_NS = 2**63 - 1  # Ollama stores a negative keep_alive as time.Duration(math.MaxInt64)
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_GO_DURATION = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


# ---- keep_alive and the VRAM setting ----------------------------------------------------------------------


def go_duration_s(text: str) -> float:
    """Go's time.ParseDuration in seconds (`5m`, `1h30m`, `-1s`, `0`); ValueError with Go's message."""
    sign, body = (-1.0, text[1:]) if text[:1] == "-" else (1.0, text[1:] if text[:1] == "+" else text)
    if body == "0":
        return 0.0
    pos, total = 0, 0.0
    for match in _GO_DURATION.finditer(body):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _GO_UNITS[match.group(2)]
        pos = match.end()
    if not body or pos != len(body):
        raise ValueError(f'time: invalid duration "{text}"')
    return sign * total


def keep_alive_s(value: Any) -> float | None:
    """A request's keep_alive in seconds (inf = forever); None when the request leaves it to the server.
    Numbers are seconds, strings Go durations, negative means forever; anything else is Ollama's 400."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        go_type = {bool: "bool", dict: "map[string]interface {}", list: "[]interface {}"}.get(type(value), "?")
        raise ApiError(400, f"Unsupported type: '{go_type}'")
    if isinstance(value, str):
        try:
            seconds = go_duration_s(value)
        except ValueError as err:
            raise ApiError(400, str(err)) from None
    else:
        seconds = float(value)
    return float("inf") if seconds < 0 else seconds


def server_keep_alive_s(environ: dict | None = None) -> float:
    """OLLAMA_KEEP_ALIVE as Ollama's envconfig reads it: a Go duration or whole seconds; default 5m."""
    text = (environ if environ is not None else os.environ).get("OLLAMA_KEEP_ALIVE", "")
    if not text:
        return DEFAULT_KEEP_ALIVE_S
    try:
        seconds = go_duration_s(text)
    except ValueError:
        try:
            seconds = float(int(text))
        except ValueError:
            return DEFAULT_KEEP_ALIVE_S
    return float("inf") if seconds < 0 else seconds


def vram_policy(setting: str | None) -> str | int:
    """OLLAMA_STANDIN_VRAM: `0`/unset -> 0 (CPU), `all` -> the model's size, digits -> that many bytes."""
    text = (setting or "0").strip().lower()
    if text == "all":
        return "all"
    if text.isdigit():
        return int(text)
    fail("OLLAMA_STANDIN_VRAM", f"{setting!r}: expected 0 (CPU), all (fully on the GPU) or a byte count")


def size_vram(policy: str | int, size: int) -> int:
    return size if policy == "all" else min(int(policy), size)


# ---- the loaded model -------------------------------------------------------------------------------------


@dataclass
class Loaded:
    record: dict
    llm: Any
    key: tuple
    num_ctx: int
    size: int
    expires_at: dt.datetime
    timer: threading.Timer | None = None


def kv_cache_bytes(metadata: dict, num_ctx: int) -> int:
    """f16 K and V for every layer and context slot, the part of Ollama's `size` that grows with num_ctx."""
    arch = metadata.get("general.architecture", "")
    try:
        layers = int(metadata[f"{arch}.block_count"])
        embed = int(metadata[f"{arch}.embedding_length"])
        heads = int(metadata[f"{arch}.attention.head_count"])
        kv_heads = int(metadata.get(f"{arch}.attention.head_count_kv", heads))
    except (KeyError, ValueError):
        return 0
    return 2 * 2 * layers * num_ctx * (embed // heads) * kv_heads


class Engine:
    """Loads, serves and unloads models; every use of the model runs under one lock (calls are serialized)."""

    def __init__(self, vram: str | None = None, keep_alive_default_s: float | None = None):
        self.run_lock = threading.Lock()
        self.vram = vram_policy(vram if vram is not None else os.environ.get("OLLAMA_STANDIN_VRAM"))
        self.keep_alive_default_s = (server_keep_alive_s() if keep_alive_default_s is None
                                     else keep_alive_default_s)
        self.loaded: Loaded | None = None

    # -- loading and expiry --

    @contextlib.contextmanager
    def session(self, record: dict, options: dict, keep_alive: float | None, *, mode: str = "generate"):
        """The model, loaded for `mode` (generate, logprobs, embed), held while the body runs; afterwards it
        stays for keep_alive seconds (0: unloaded at once, inf: until another model is needed)."""
        seconds = self.keep_alive_default_s if keep_alive is None else keep_alive
        with self.run_lock:
            started = time.perf_counter_ns()
            loaded = self._ensure(record, options, mode)
            loaded.expires_at = _expiry(seconds)
            try:
                yield loaded.llm, time.perf_counter_ns() - started
            finally:
                self._schedule_expiry(loaded, seconds)

    def _ensure(self, record: dict, options: dict, mode: str) -> Loaded:
        threads = int(options["num_thread"]) if options.get("num_thread") else None
        num_ctx = int(options["num_ctx"])
        key = (record["parsed"]["from"], num_ctx, mode, threads)
        current = self.loaded
        if current is not None and current.timer is not None:
            current.timer.cancel()
        if current is not None and _serves(current.key, key):
            current.record = record
            return current
        self.loaded = None  # drop the old model before loading the next one (one at a time, like a small board)
        extra = {"logits_all": True} if mode == "logprobs" else {"embedding": True} if mode == "embed" else {}
        try:
            llm = load_llama(record["parsed"]["from"], n_ctx=num_ctx, n_threads=threads, **extra)
        except (ValueError, RuntimeError, OSError) as err:  # what llama.cpp raises for a model it cannot load
            raise ApiError(500, f"llama runner process has terminated: {err}") from None
        size = record["size"] + kv_cache_bytes(llm.metadata, num_ctx)
        self.loaded = Loaded(record, llm, key, num_ctx, size, _expiry(self.keep_alive_default_s))
        return self.loaded

    def _schedule_expiry(self, loaded: Loaded, seconds: float) -> None:
        loaded.expires_at = _expiry(seconds)
        if seconds <= 0:
            self.loaded = None if self.loaded is loaded else self.loaded
        elif seconds != float("inf"):
            loaded.timer = threading.Timer(seconds, self._expire, args=(loaded,))
            loaded.timer.daemon = True
            loaded.timer.start()

    def _expire(self, loaded: Loaded) -> None:
        with self.run_lock:
            if self.loaded is loaded and dt.datetime.now(dt.timezone.utc) >= loaded.expires_at:
                self.loaded = None

    def unload(self, record: dict) -> None:
        """keep_alive 0 without a prompt: unload the model if it is the one loaded (Ollama's expireRunner)."""
        with self.run_lock:
            current = self.loaded
            if current is not None and current.key[0] == record["parsed"]["from"]:
                if current.timer is not None:
                    current.timer.cancel()
                self.loaded = None

    def running(self) -> list[dict]:
        """/api/ps entries: the loaded model with its size, size_vram (per OLLAMA_STANDIN_VRAM), expiry."""
        current = self.loaded
        if current is None:
            return []
        record = current.record
        return [{"name": record["name"], "model": record["name"], "size": current.size,
                 "digest": record["digest"], "details": public_details(record, parent=False),
                 "expires_at": current.expires_at.isoformat(timespec="microseconds").replace("+00:00", "Z"),
                 "size_vram": size_vram(self.vram, current.size), "context_length": current.num_ctx}]

    # -- generation --

    def generate(self, record: dict, prompt: str, *, options: dict, fmt: Any = None, top_logprobs: int | None = None,
                 keep_alive: float | None = None, context: list[int] | None = None) -> Iterator[dict]:
        """Decode `prompt`; yields {"text", "logprobs"?} per piece as llama.cpp produces them, then one
        {"done": True, "done_reason", durations, counts, "context"} with Ollama's metric names."""
        grammar = grammar_for(fmt)
        mode = "generate" if top_logprobs is None else "logprobs"
        started = time.perf_counter_ns()
        with self.session(record, options, keep_alive, mode=mode) as (llm, load_ns):
            if context:
                prompt = llm.detokenize(context).decode("utf-8", errors="replace") + prompt
            tokens = llm.tokenize(prompt.encode(), add_bos=llm._model.add_bos_token(), special=True)
            if len(tokens) >= llm.n_ctx():
                raise ApiError(400, f"prompt is {len(tokens)} tokens; num_ctx is {llm.n_ctx()}")
            sampled: list[int] = []  # perf_counter_ns of each sampling step: eval_count and the split of time

            def count_step(_ids, scores):
                sampled.append(time.perf_counter_ns())
                return scores

            from llama_cpp import LogitsProcessorList

            text_parts, finish = [], "stop"
            for chunk in llm.create_completion(
                tokens, stream=True, max_tokens=_max_tokens(options, len(tokens), llm.n_ctx()),
                temperature=float(options["temperature"]), top_k=int(options["top_k"]),
                top_p=float(options["top_p"]), min_p=float(options["min_p"]), typical_p=float(options["typical_p"]),
                repeat_penalty=float(options["repeat_penalty"]), presence_penalty=float(options["presence_penalty"]),
                frequency_penalty=float(options["frequency_penalty"]), stop=list(options["stop"]) or None,
                seed=None if int(options["seed"]) < 0 else int(options["seed"]), grammar=grammar,
                logprobs=top_logprobs, logits_processor=LogitsProcessorList([count_step]),
            ):
                choice = chunk["choices"][0]
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
                if choice["text"] or choice.get("logprobs"):
                    text_parts.append(choice["text"])
                    piece: dict[str, Any] = {"text": choice["text"]}
                    if top_logprobs is not None:
                        piece["logprobs"] = ollama_logprobs(choice.get("logprobs"))
                    yield piece
            finished = time.perf_counter_ns()
            first = sampled[0] if sampled else finished
            output = "".join(text_parts)
            context_out = llm.tokenize((prompt + output).encode(), add_bos=False, special=True)
        yield {"done": True, "done_reason": "length" if finish == "length" else "stop",
               "total_duration": time.perf_counter_ns() - started, "load_duration": load_ns,
               "prompt_eval_count": len(tokens), "prompt_eval_duration": max(first - started - load_ns, 1),
               "eval_count": len(sampled), "eval_duration": max(finished - first, 1), "context": context_out}

    def complete(self, record: dict, prompt: str, **kwargs) -> dict:
        """generate() gathered: {"text", "logprobs"?, and the final event's fields}."""
        text, logprobs, final = [], [], {}
        for event in self.generate(record, prompt, **kwargs):
            if event.get("done"):
                final = event
            else:
                text.append(event["text"])
                logprobs += event.get("logprobs", [])
        result = {"text": "".join(text), **final}
        if kwargs.get("top_logprobs") is not None:
            result["logprobs"] = logprobs
        return result

    def embed(self, record: dict, texts: list[str], *, options: dict, keep_alive: float | None,
              truncate: bool = True) -> tuple[list[list[float]], int, int]:
        """Last-token hidden states (what Ollama's llama.cpp runner returns for a generative llama/qwen2
        model), one per text, with the prompt token count and the load time in ns."""
        with self.session(record, options, keep_alive, mode="embed") as (llm, load_ns):
            vectors, count = [], 0
            limit = llm.n_ctx()
            for text in texts:
                tokens = llm.tokenize(text.encode(), add_bos=llm._model.add_bos_token(), special=True)
                if len(tokens) > limit:
                    if not truncate:
                        raise ApiError(400, "input exceeds maximum context length")
                    tokens = tokens[:limit]
                count += len(tokens)
                llm.reset()
                llm.eval(tokens)
                vectors.append(_last_embedding(llm))
        return vectors, count, load_ns


def _last_embedding(llm) -> list[float]:
    import llama_cpp

    n_embd = llm.n_embd()
    pointer = llama_cpp.llama_get_embeddings_ith(llm.ctx, -1)
    if not pointer:
        raise ApiError(500, "this model does not support embeddings")
    return [float(pointer[i]) for i in range(n_embd)]


def _serves(loaded: tuple, wanted: tuple) -> bool:
    """The loaded model can answer: the same key, or loaded for logprobs (logits_all) and asked to generate,
    which it does as well, so a router's logprob calls and a plain request do not reload each other."""
    return loaded == wanted or (wanted[2] == "generate" and loaded == (*wanted[:2], "logprobs", wanted[3]))


def _max_tokens(options: dict, prompt_tokens: int, n_ctx: int) -> int:
    """Ollama caps num_predict (-1 or above 10 x num_ctx) at 10 x num_ctx; llama.cpp here cannot shift the
    context, so the answer also stops where the context is full (done_reason "length")."""
    predict = int(options["num_predict"])
    if predict < 0 or predict > 10 * n_ctx:
        predict = 10 * n_ctx
    return max(1, min(predict, n_ctx - prompt_tokens))


def _expiry(seconds: float) -> dt.datetime:
    now = dt.datetime.now(dt.timezone.utc)
    if seconds == float("inf"):
        return now + dt.timedelta(microseconds=FOREVER_NS // 1000)
    return now + dt.timedelta(seconds=seconds)


def ollama_logprobs(lp: dict | None) -> list[dict]:
    """llama-cpp-python's OpenAI-completion logprobs -> Ollama's [{token, logprob, bytes, top_logprobs}]."""
    if not lp:
        return []
    entries = []
    for token, logprob, tops in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"] or []):
        entry = {"token": token, "logprob": float(logprob), "bytes": list(token.encode())}
        entry["top_logprobs"] = [{"token": t, "logprob": float(v), "bytes": list(t.encode())}
                                 for t, v in sorted((tops or {}).items(), key=lambda kv: -kv[1])]
        entries.append(entry)
    return entries


def public_details(record: dict, *, parent: bool = True) -> dict:
    """Ollama's ModelDetails: parent_model, format, family, families, parameter_size, quantization_level."""
    details = {k: v for k, v in record["details"].items() if k != "context_length"}
    return {"parent_model": record.get("parent_model", "") if parent else "", **details}


__all__ = ["Engine", "keep_alive_s", "go_duration_s", "vram_policy", "ollama_logprobs", "public_details", "now_iso"]
