"""Everything a model is shown: the teacher's and the students' prompts, chat rendering, the label grammar.

One place for each, so training, evaluation, export (the Ollama TEMPLATE) and the robot's runtime can never
render or constrain differently:
- prompts: the teacher's (catalog in the prompt, used by collection and the untrained baseline) and the
  students' (short: the skills are learned from data) under distinct names;
- `normalize_text`: the identity of a prompt (dedupe in collection, splits in training, harvest, review);
- `render_chat`: a Hugging Face chat template rendered by transformers' own renderer when transformers is
  installed (training, export), else by a Jinja environment set up exactly as transformers sets it up (the
  robot's runtime install has no transformers): sandboxed, trim/lstrip blocks, loop controls, the
  `{% generation %}` block, `tojson` with its options, `raise_exception` and `strftime_now`, so a Llama 3.x
  template renders the same date at runtime as in training;
- `label_grammar`: the GBNF of a catalog label with one optional leading whitespace character (tokenizers
  fold a leading space into the first token, ` {`; a grammar that starts strictly at `{` forces an unlikely
  token and derails the answer: measured in the first round, NOTES.md).

Imports nothing heavy at module level: the runtime imports this.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .skills import Catalog

# ---- prompts ------------------------------------------------------------------------------------------

TEACHER_ROUTE_PROMPT = """You are the router of a small robot head at a maker space. Map what a visitor says to exactly one skill.

Skills:
{catalog}

Rules:
- Pick the single skill that does what the visitor asks; use "chat" when no other skill fits (questions, small talk, things the robot cannot do).
- Fill "args" exactly as the skill's schema says; skills without args take {{}}.
- Copy colors, places and sound names from the request in plain lowercase words (places keep their capitals); write numbers as digits ("fifty" -> 50); timer minutes are numbers (90 seconds -> 1.5, half an hour -> 30).
- Answer with only the JSON object {{"skill": "<name>", "args": {{...}}}} and nothing else."""

TEACHER_STYLE_PROMPT = """{persona}

You are the droid described above. Answer the visitor's message with the spoken words only, following the rules."""

TEACHER_EXPAND_PROMPT = """Paraphrase requests that visitors say to a small robot head. Write {count} different ways a visitor could say the request you are given.
Keep the same intent and every specific detail (direction, color, number, place, sound name); vary the wording, length and politeness; some may be casual or curt.
Answer with only the JSON object {{"paraphrases": ["...", "..."]}}."""

# The students learn the skills from data and the grammar holds them to the label's JSON, so their prompts are
# a name for the task and no more: every token of it is in every training example and every request's prefill.
# Measured on the demo's data (SmolLM2 tokenizer): the router prompt of earlier students (a 30-token sentence
# describing the JSON) made a training example 70 tokens on average, this one 42 (docs/runtime.md). A student
# keeps the prompt it was trained with (student.json `system_prompt`).
STUDENT_ROUTER_PROMPT = "Route the request as JSON."
STUDENT_STYLE_PROMPT = "You are the droid head. Answer in at most two short sentences."


def teacher_route_prompt(catalog: Catalog) -> str:
    """The catalog prompt the teacher labels routes with (the evaluator's untrained baseline gets the same)."""
    return TEACHER_ROUTE_PROMPT.format(catalog=catalog.describe())


def teacher_style_prompt(persona: str) -> str:
    return TEACHER_STYLE_PROMPT.format(persona=persona.strip())


def teacher_expand_prompt(count: int) -> str:
    return TEACHER_EXPAND_PROMPT.format(count=count)


def brief_route_prompt(catalog: Catalog) -> str:
    """A short routing prompt for a model with no student.json (the untrained base in tests and benchmarks)."""
    lines = [f"- {s.name}: {s.description}" for s in catalog.skills.values()]
    return (
        'Route the user\'s request to one skill. Answer only with JSON {"skill": name, "args": {...}}.\nSkills:\n'
        + "\n".join(lines)
    )


def normalize_text(text: str) -> str:
    """The identity of a prompt: case, width, inner spacing and surrounding punctuation do not make a new one.

    "Look left," and "look left" are one prompt everywhere (collection's dedupe, training's splits, harvest).
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    text = " ".join(text.split())
    return text.strip(" .!?,;:'\"")


# ---- chat rendering -------------------------------------------------------------------------------------

# The template of ChatML models (SmolLM2, Qwen): the fallback for a GGUF without a template of its own.
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def chat_messages(system: str | None, user: str | None, assistant: str | None = None) -> list[dict]:
    """One system turn (if any), one user turn (if any), and the answer (if any), as chat messages."""
    turns = (("system", system), ("user", user), ("assistant", assistant))
    return [{"role": role, "content": content} for role, content in turns if content is not None]


# Variables every chat rendering gets, in training (distill.bases.serving_tokenization), export and the runtime.
# - Students answer at once: a template with a thinking switch (Qwen3's `enable_thinking`) renders its no-thinking
#   form, so the prompt ends in the empty think block and the answer the model learns, and the grammar allows, is
#   the label itself. Measured on the Qwen3 replica without it: the prompt ended at `<|im_start|>assistant\n` and
#   the trained answer began with `<think>\n\n</think>\n\n`, which the label grammar then forbids.
# - One date: Llama 3.x templates print "Today Date: <strftime_now>" unless `date_string` is given, so training,
#   the Modelfile (rendered at export) and the runtime (at each request) would each show their own day. The
#   templates' own fallback date keeps the prompt the same on every day.
TEMPLATE_VARIABLES = {"enable_thinking": False, "date_string": "26 Jul 2024"}


def render_chat(template: str | None, messages: list[dict], *, add_generation_prompt: bool = True,
                bos_token: str = "", eos_token: str = "") -> str:
    """What transformers' `apply_chat_template(messages, tokenize=False, **TEMPLATE_VARIABLES)` renders."""
    template = template or CHATML
    try:
        from transformers.utils.chat_template_utils import render_jinja_template
    except ImportError:  # the robot's runtime install: our environment, set up as transformers does
        return _compiled(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                          bos_token=bos_token, eos_token=eos_token, **TEMPLATE_VARIABLES)
    rendered, _ = render_jinja_template([messages], chat_template=template,
                                        add_generation_prompt=add_generation_prompt, bos_token=bos_token,
                                        eos_token=eos_token, **TEMPLATE_VARIABLES)
    return rendered[0]


@functools.lru_cache(maxsize=16)
def _compiled(template: str):
    """A sandboxed Jinja template with transformers' chat-template environment (compiled once per template)."""
    from jinja2 import nodes
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationBlock(Extension):
        """`{% generation %}...{% endgeneration %}` marks assistant text for masks; it renders its body."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.Scope(body, lineno=lineno)

    def tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None,
               sort_keys: bool = False) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def raise_exception(message: str):
        raise ValueError(message)

    def strftime_now(fmt: str) -> str:
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationBlock, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(template)


# ---- the label grammar ------------------------------------------------------------------------------------

def label_grammar(catalog: Catalog, text: str | None = None) -> str:
    """GBNF of a whole label (llama.cpp's converter of the catalog's JSON schema) after optional whitespace;
    with `text`, the copy args are held to the request's words (Catalog.label_schema)."""
    return with_optional_leading_space(schema_grammar(catalog.label_schema(text)))


def schema_grammar(schema: dict) -> str:
    """llama.cpp's GBNF for a JSON schema (llama-cpp-python's port of json_schema_to_grammar)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    return json_schema_to_gbnf(json.dumps(schema))


def with_optional_leading_space(gbnf: str) -> str:
    """The same grammar, allowing one leading space, tab or newline before its root."""
    gbnf, found = re.subn(r"^root\s*::=", "label ::=", gbnf, count=1, flags=re.M)
    if not found:
        raise ValueError("the grammar has no root rule")
    return gbnf + "\nroot ::= [ \\t\\n]? label\n"
