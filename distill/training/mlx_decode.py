"""Greedy, grammar-constrained decoding of router labels with an mlx-lm model (the MLX student and the base).

At each step `MlxBackend` keeps the most likely token whose text keeps the output a prefix of some canonical
label: a regular language built from the catalog (skill names, enum values, string / integer / number shapes,
in schema order). That is greedy decoding under a grammar, the rule llama.cpp's sampler applies at temperature
0, restricted to the canonical compact form the student was trained to emit. The fixed opening `{"skill":"` is
fed with the prompt rather than decoded, and text the grammar forces is fed in one forward pass; the shared
prompt prefix's KV cache is reused across requests (2.3x faster than token-by-token, same predictions).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from ..blas import default_dtype
from ..prompting import chat_messages
from ..runtime.backends import Piece, RawPrediction, interpret
from ..skills import Catalog
from ..student import StudentSpec


# ---- the label language -------------------------------------------------------------------------------

def _value_pattern(schema: dict) -> str:
    import regex

    if "enum" in schema:
        return "(?:" + "|".join(regex.escape(json.dumps(v, ensure_ascii=False)) for v in schema["enum"]) + ")"
    kind = schema.get("type")
    if kind == "string" and "pattern" in schema:
        # The catalog's anchored pattern (config/skills.yaml), as llama.cpp's grammar applies it at runtime.
        return '"(?:' + schema["pattern"][1:-1] + ')"'
    if kind == "string":
        longest = int(schema.get("maxLength", 64))
        return '"[^"\\\\\\x00-\\x1f]{%d,%d}"' % (max(1, int(schema.get("minLength", 1))), longest)
    if kind == "integer":
        return "-?(?:0|[1-9][0-9]{0,8})"
    if kind == "number":
        return "-?(?:0|[1-9][0-9]{0,8})(?:\\.[0-9]{1,6})?"
    if kind == "boolean":
        return "(?:true|false)"
    raise ValueError(f"unsupported arg schema {schema}")


def label_pattern(catalog: Catalog, text: str | None = None) -> str:
    """A regex whose full matches are exactly the canonical labels (values in schema shape); with `text`, the
    copy args are held to the request's words, as at runtime (Catalog.label_schema)."""
    import regex

    branches = []
    for branch in catalog.label_schema(text)["anyOf"]:
        name, props = branch["properties"]["skill"]["const"], branch["properties"]["args"].get("properties", {})
        args = ",".join(f'{regex.escape(json.dumps(k))}:{_value_pattern(s)}' for k, s in props.items())
        branches.append(regex.escape(f'{name}","args":{{') + args + "\\}")
    return '\\s?\\{"skill":"(?:' + "|".join(branches) + ")\\}"


_ALPHABET = [chr(c) for c in range(32, 127)]
LABEL_PREFIX = '{"skill":"'
_SKILL_CHOSEN = re.compile(r'\s?\{"skill":"[^"]+"')


class LabelConstraint:
    def __init__(self, catalog: Catalog, text: str | None = None):
        import regex

        self._pattern = regex.compile(label_pattern(catalog, text))

    def viable(self, text: str) -> bool:
        return self._pattern.fullmatch(text, partial=True) is not None

    def complete(self, text: str) -> bool:
        return self._pattern.fullmatch(text) is not None

    def forced(self, text: str, limit: int = 64) -> str:
        """The characters the grammar forces next (`","args":{}}` after an arg-free skill, `"}}` after an enum
        value...). Empty until the skill name is complete, so the model alone spells the skill and the
        confidence stays its own."""
        extension = ""
        while len(extension) < limit and not self.complete(text + extension):
            options = [c for c in _ALPHABET if self.viable(text + extension + c)]
            if len(options) != 1:
                break
            extension += options[0]
        named = _SKILL_CHOSEN.match(text) or extension.startswith('"')
        return extension if named else ""


# ---- MLX backend --------------------------------------------------------------------------------------

TOP_K = 64  # candidates tried before the whole vocabulary (MlxBackend._best_viable)


class MlxBackend:
    """An mlx-lm model (+ optional adapters) decoding labels under the catalog constraint."""

    def __init__(self, model, tokenizer, catalog: Catalog, system_prompt: str, *, max_tokens: int = 64,
                 model_version: str = "mlx"):
        self.model, self.tokenizer, self.catalog = model, tokenizer, catalog
        self.system_prompt = system_prompt
        self.constraint = LabelConstraint(catalog)  # the request-free language; x-copy: one per request
        self._grounded = any(skill.copy_args for skill in catalog.skills.values())
        self.max_tokens = max_tokens
        self.model_version = model_version
        self._texts: dict[int, str] = {}
        self._special = set(tokenizer.all_special_ids)
        self._cache, self._cached = None, []  # KV cache of the tokens in _cached
        self._prefix_tokens = tokenizer.encode(LABEL_PREFIX, add_special_tokens=False)

    @classmethod
    def load(cls, base: str, catalog: Catalog, system_prompt: str, adapter_dir: str | Path | None = None, **kwargs) -> MlxBackend:
        import mlx.core as mx

        from ..bases import load_mlx_base

        # The loader training used: the same tokenization of the prompt (see bases.serving_tokenization).
        model, tokenizer = load_mlx_base(str(base), adapter_path=adapter_dir)
        if default_dtype() == "float32":
            model.set_dtype(mx.float32)
        version = f"mlx:{Path(adapter_dir).name if adapter_dir else Path(str(base)).name}"
        return cls(model, tokenizer, catalog, system_prompt, model_version=version, **kwargs)

    @classmethod
    def from_student(cls, student_dir: str | Path, catalog: Catalog | None = None, **kwargs) -> MlxBackend:
        spec = StudentSpec.load(student_dir)
        return cls.load(spec.base, catalog or spec.load_catalog(), spec.system_prompt, adapter_dir=student_dir,
                        **kwargs)

    def _text(self, token: int) -> str:
        if token not in self._texts:
            self._texts[token] = self.tokenizer.decode([token])
        return self._texts[token]

    def _prefill(self, tokens: list[int]):
        """Logits after `tokens`, reusing the KV cache of the longest prefix shared with the last call
        (the system prompt and user header are the same for every request)."""
        import mlx.core as mx
        from mlx_lm.models.cache import make_prompt_cache, trim_prompt_cache

        if self._cache is None:
            self._cache, self._cached = make_prompt_cache(self.model), []
        shared = 0
        for cached, new in zip(self._cached, tokens[:-1]):  # always recompute at least the last token
            if cached != new:
                break
            shared += 1
        trim_prompt_cache(self._cache, len(self._cached) - shared)
        self._cached = tokens[:]
        return self.model(mx.array(tokens[shared:])[None], cache=self._cache)[0, -1]

    def _best_viable(self, output: str, logprobs) -> int | None:
        """The most likely token that keeps the output inside the label language.

        The most likely TOP_K tokens are tried first and the whole vocabulary only when none of them fits: sorting
        all 49152 logits and listing them took 8.8 ms a step against 1.4 ms for the top 64 (MLX on our quiet 2-core
        VM; eval-router on the demo's test split 90 -> 86 s), and the token picked is the same (the top 64, sorted,
        are the start of the order).
        """
        import mlx.core as mx

        top = mx.argpartition(-logprobs, TOP_K)[:TOP_K] if logprobs.size > TOP_K else mx.arange(logprobs.size)
        token = self._first_viable(output, top[mx.argsort(-logprobs[top])].tolist())
        if token is None:  # none of the likely tokens fits: the whole vocabulary, in order
            token = self._first_viable(output, mx.argsort(-logprobs).tolist())
        return token

    def _first_viable(self, output: str, order: list[int]) -> int | None:
        return next((t for t in order if t not in self._special and self.constraint.viable(output + self._text(t))), None)

    def prompt_tokens(self, text: str, system_prompt: str | None = None) -> list[int]:
        messages = chat_messages(system_prompt or self.system_prompt, text)
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)

    def predict(self, text: str, system_prompt: str | None = None) -> RawPrediction:
        import mlx.core as mx

        started = time.perf_counter()
        # Every label starts with the same bytes: feed them with the prompt instead of decoding them one by one
        # (`{"` `skill` `":"` tokenize the same alone as inside a label, so the model sees what it was trained on).
        logits = self._prefill(self.prompt_tokens(text, system_prompt) + self._prefix_tokens)
        output, pieces = LABEL_PREFIX, [Piece(LABEL_PREFIX.encode(), 0.0)]
        if self._grounded:
            self.constraint = LabelConstraint(self.catalog, text)
        for _ in range(self.max_tokens):
            logprobs = logits - mx.logsumexp(logits)
            token = self._best_viable(output, logprobs)
            if token is None:
                break  # no token of the vocabulary fits (cannot happen for a well-formed catalog)
            pieces.append(Piece(self._text(token).encode(), logprobs[token].item()))
            output += self._text(token)
            step = [token]
            forced = self.constraint.forced(output)
            if forced:  # no choice: take the forced text in one forward pass instead of token by token
                output += forced
                pieces.append(Piece(forced.encode(), 0.0))
                if self.constraint.complete(output):
                    break
                step += self.tokenizer.encode(forced, add_special_tokens=False)
            logits = self.model(mx.array([step]), cache=self._cache)[0, -1]
            self._cached += step
        return interpret(text, output.strip(), pieces, self.catalog, (time.perf_counter() - started) * 1000)
