"""The part of Go's text/template that Ollama Modelfile TEMPLATEs use, rendered in Python.

Supported: text, `{{ .Field }}` (dotted paths, `$` for the root, `$var`), `{{ if }}` / `{{ else if }}` /
`{{ else }}` / `{{ end }}`, `{{ range [$i, $v :=] .List }}` (with `{{ else }}`), the trim markers `{{- ` and
` -}}`, comments `{{/* */}}`, string/number/bool literals, pipes `a | f`, and the functions eq ne lt le gt ge
and or not len index json print. Anything else raises TemplateError naming the offset, so a template that the
stand-in accepts is one that Go would parse too (never the other way round silently).

Truth follows Go: false, 0, nil, "" and empty lists/maps are false. A missing field is an error (Ollama's
template data is a struct, where Go fails the same way).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TemplateError", "Template", "render"]


class TemplateError(ValueError):
    """A template that does not parse or does not execute; the message names the offset."""


# ---- lexing: split the source into text and {{ actions }} ---------------------------------------------

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>"(?:[^"\\\n]|\\.)*")
    | (?P<raw>`[^`]*`)
    | (?P<num>-?\d+(?:\.\d+)?)
    | (?P<decl>:=)
    | (?P<punct>[|(),=])
    | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.X,
)
_SPACE = " \t\r\n"


@dataclass
class _Tok:
    kind: str
    text: str


def _tokenize(source: str, offset: int) -> list[_Tok]:
    tokens, pos = [], 0
    while pos < len(source):
        if not source[pos:].strip():
            break
        match = _TOKEN.match(source, pos)
        if not match or match.end() == pos:
            raise TemplateError(f"offset {offset}: cannot parse {source[pos:].strip()!r} in action")
        kind = match.lastgroup
        tokens.append(_Tok(kind, match.group(kind)))
        pos = match.end()
    return tokens


# ---- syntax tree -----------------------------------------------------------------------------------------


@dataclass
class _Text:
    text: str


@dataclass
class _Action:
    pipe: list  # list of commands; each command is a list of operands
    offset: int


@dataclass
class _If:
    branches: list[tuple[_Action, list]] = field(default_factory=list)
    otherwise: list = field(default_factory=list)


@dataclass
class _Range:
    names: list[str]
    pipe: _Action
    body: list = field(default_factory=list)
    otherwise: list = field(default_factory=list)


def _lex(source: str) -> list[tuple[str, Any, int]]:
    """Items: ("text", str, offset) and ("action", tokens-or-None-for-comment, offset), trims applied."""
    items: list[tuple[str, Any, int]] = []
    pos = 0
    trim_next = False
    for match in _ACTION.finditer(source):
        text = source[pos : match.start()]
        if trim_next:
            text = text.lstrip(_SPACE)
        if match.group(1):
            text = text.rstrip(_SPACE)
        if text:
            items.append(("text", text, pos))
        body = match.group(2).strip()
        if body.startswith("/*"):
            if not body.endswith("*/"):
                raise TemplateError(f"offset {match.start()}: unclosed comment")
            items.append(("comment", None, match.start()))
        else:
            if not body:
                raise TemplateError(f"offset {match.start()}: empty action {{{{}}}}")
            items.append(("action", _tokenize(body, match.start()), match.start()))
        trim_next = bool(match.group(3))
        pos = match.end()
    if "{{" in source[pos:]:
        raise TemplateError(f"offset {source.index('{{', pos)}: unclosed action")
    tail = source[pos:]
    if trim_next:
        tail = tail.lstrip(_SPACE)
    if tail:
        items.append(("text", tail, pos))
    return items


class _Parser:
    def __init__(self, items: list[tuple[str, Any, int]]):
        self.items = items
        self.pos = 0

    def parse(self) -> list:
        nodes, stop = self._nodes(())
        if stop is not None:
            raise TemplateError(f"offset {stop[2]}: unexpected {{{{ {stop[1][0].text} }}}}")
        return nodes

    def _nodes(self, stops: tuple[str, ...], opener: tuple[str, int] = ("", 0)) -> tuple[list, tuple | None]:
        nodes: list = []
        while self.pos < len(self.items):
            kind, value, offset = self.items[self.pos]
            self.pos += 1
            if kind == "text":
                nodes.append(_Text(value))
                continue
            if kind == "comment":
                continue
            keyword = value[0].text if value[0].kind == "ident" else None
            if keyword in ("end", "else"):
                if keyword not in stops:
                    raise TemplateError(f"offset {offset}: unexpected {{{{ {keyword} }}}}")
                return nodes, (keyword, value, offset)
            if keyword == "if":
                nodes.append(self._if(value[1:], offset))
            elif keyword == "range":
                nodes.append(self._range(value[1:], offset))
            elif keyword in ("with", "define", "template", "block", "break", "continue"):
                raise TemplateError(f"offset {offset}: {{{{ {keyword} }}}} is not supported by this renderer")
            else:
                nodes.append(_pipeline(value, offset))
        if stops:
            raise TemplateError(f"offset {opener[1]}: missing {{{{ end }}}} for this {{{{ {opener[0]} }}}}")
        return nodes, None

    def _if(self, tokens: list[_Tok], offset: int) -> _If:
        node = _If()
        condition = _pipeline(tokens, offset)
        while True:
            body, (keyword, value, at) = self._nodes(("else", "end"), ("if", offset))
            node.branches.append((condition, body))
            if keyword == "end":
                return node
            rest = value[1:]
            if rest and rest[0].kind == "ident" and rest[0].text == "if":
                condition = _pipeline(rest[1:], at)
                continue
            if rest:
                raise TemplateError(f"offset {at}: unexpected tokens after else")
            node.otherwise, (keyword, _, at) = self._nodes(("end",), ("if", offset))
            return node

    def _range(self, tokens: list[_Tok], offset: int) -> _Range:
        names: list[str] = []
        if any(t.kind == "decl" for t in tokens):
            split = next(i for i, t in enumerate(tokens) if t.kind == "decl")
            decl = [t for t in tokens[:split] if t.text != ","]
            if not 1 <= len(decl) <= 2 or any(t.kind != "var" or "." in t.text for t in decl):
                raise TemplateError(f"offset {offset}: range declares one or two $variables")
            names = [t.text for t in decl]
            tokens = tokens[split + 1 :]
        node = _Range(names, _pipeline(tokens, offset))
        node.body, (keyword, _, _) = self._nodes(("else", "end"), ("range", offset))
        if keyword == "else":
            node.otherwise, _ = self._nodes(("end",), ("range", offset))
        return node


def _pipeline(tokens: list[_Tok], offset: int) -> _Action:
    if not tokens:
        raise TemplateError(f"offset {offset}: missing value")
    commands, pos = _parse_pipe(tokens, 0, offset)
    if pos != len(tokens):
        raise TemplateError(f"offset {offset}: unbalanced )")
    return _Action(commands, offset)


def _parse_pipe(tokens: list[_Tok], pos: int, offset: int) -> tuple[list, int]:
    """Commands separated by `|` up to a closing `)` or the end; a `( ... )` is one operand."""
    commands: list[list] = [[]]
    while pos < len(tokens):
        tok = tokens[pos]
        if tok.kind == "punct" and tok.text == ")":
            break
        pos += 1
        if tok.kind == "punct" and tok.text == "(":
            inner, pos = _parse_pipe(tokens, pos, offset)
            if pos >= len(tokens):
                raise TemplateError(f"offset {offset}: unbalanced (")
            pos += 1
            commands[-1].append(("pipe", inner))
        elif tok.kind == "punct" and tok.text == "|":
            commands.append([])
        elif tok.kind in ("decl", "punct"):
            raise TemplateError(f"offset {offset}: unexpected {tok.text!r} (variable assignment is not supported)")
        else:
            commands[-1].append((tok.kind, tok.text))
    if any(not command for command in commands):
        raise TemplateError(f"offset {offset}: empty command in pipeline")
    return commands, pos


# ---- execution ------------------------------------------------------------------------------------------


def _truth(value: Any) -> bool:
    return bool(value) if value is not None else False


def _lookup(value: Any, path: list[str], offset: int) -> Any:
    for name in path:
        if isinstance(value, dict):
            if name not in value:
                raise TemplateError(f"offset {offset}: can't evaluate field {name}")
            value = value[name]
        elif hasattr(value, name):
            value = getattr(value, name)
        else:
            raise TemplateError(f"offset {offset}: can't evaluate field {name} in type {type(value).__name__}")
    return value


def _compare(op: str):
    def fn(a, *bs):
        if op == "eq":
            return any(a == b for b in bs)
        if len(bs) != 1:
            raise TemplateError(f"{op} takes two arguments")
        b = bs[0]
        return {"ne": a != b, "lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b}[op]

    return fn


def _and(*args):
    for arg in args:
        if not _truth(arg):
            return arg
    return args[-1]


def _or(*args):
    for arg in args:
        if _truth(arg):
            return arg
    return args[-1]


def _index(item, *keys):
    for key in keys:
        item = item[key]
    return item


_FUNCS = {
    **{op: _compare(op) for op in ("eq", "ne", "lt", "le", "gt", "ge")},
    "and": _and,
    "or": _or,
    "not": lambda a: not _truth(a),
    "len": len,
    "index": _index,
    "json": lambda a: json.dumps(a, ensure_ascii=False, separators=(",", ":")),
    "print": lambda *a: "".join(_to_text(x) for x in a),
}


def _to_text(value: Any) -> str:
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class _Scope:
    def __init__(self, root: Any):
        self.root = root
        self.vars: dict[str, Any] = {"$": root}

    def child(self) -> _Scope:
        scope = _Scope(self.root)
        scope.vars = dict(self.vars)
        return scope


def _operand(kind: str, text: Any, dot: Any, scope: _Scope, offset: int) -> Any:
    if kind == "pipe":
        return _run_pipe(text, dot, scope, offset)
    if kind == "field":
        return dot if text == "." else _lookup(dot, text[1:].split("."), offset)
    if kind == "var":
        name, *path = text.split(".")
        if name not in scope.vars:
            raise TemplateError(f"offset {offset}: undefined variable {name}")
        return _lookup(scope.vars[name], path, offset)
    if kind == "str":
        return json.loads(text)
    if kind == "raw":
        return text[1:-1]
    if kind == "num":
        return float(text) if "." in text else int(text)
    if kind == "ident":
        if text in ("true", "false"):
            return text == "true"
        if text == "nil":
            return None
    raise TemplateError(f"offset {offset}: unknown function {text!r}")


def _run_command(command: list, dot: Any, scope: _Scope, offset: int, piped: tuple = ()) -> Any:
    head_kind, head = command[0]
    if head_kind == "ident" and head in _FUNCS:
        args = [_operand(k, t, dot, scope, offset) for k, t in command[1:]] + list(piped)
        try:
            return _FUNCS[head](*args)
        except TemplateError:
            raise
        except Exception as err:  # wrong arity or types: report like Go does, at the action
            raise TemplateError(f"offset {offset}: error calling {head}: {err}") from None
    if head_kind == "ident" and head not in ("true", "false", "nil"):
        raise TemplateError(f"offset {offset}: unknown function {head!r}")
    if len(command) > 1 or piped:
        raise TemplateError(f"offset {offset}: {head!r} is not a function and takes no arguments")
    return _operand(head_kind, head, dot, scope, offset)


def _run_pipe(commands: list, dot: Any, scope: _Scope, offset: int) -> Any:
    value = _run_command(commands[0], dot, scope, offset)
    for command in commands[1:]:
        value = _run_command(command, dot, scope, offset, piped=(value,))
    return value


def _execute(nodes: list, dot: Any, scope: _Scope, out: list[str]) -> None:
    for node in nodes:
        if isinstance(node, _Text):
            out.append(node.text)
        elif isinstance(node, _Action):
            out.append(_to_text(_run_pipe(node.pipe, dot, scope, node.offset)))
        elif isinstance(node, _If):
            for condition, body in node.branches:
                if _truth(_run_pipe(condition.pipe, dot, scope, condition.offset)):
                    _execute(body, dot, scope.child(), out)
                    break
            else:
                _execute(node.otherwise, dot, scope.child(), out)
        elif isinstance(node, _Range):
            items = _run_pipe(node.pipe.pipe, dot, scope, node.pipe.offset)
            if items is None:
                items = []
            if isinstance(items, dict):
                pairs = list(items.items())
            elif isinstance(items, (list, tuple)):
                pairs = list(enumerate(items))
            else:
                raise TemplateError(f"offset {node.pipe.offset}: range can't iterate over {type(items).__name__}")
            if not pairs:
                _execute(node.otherwise, dot, scope.child(), out)
            for key, item in pairs:
                inner = scope.child()
                if len(node.names) == 1:
                    inner.vars[node.names[0]] = item
                elif len(node.names) == 2:
                    inner.vars[node.names[0]], inner.vars[node.names[1]] = key, item
                _execute(node.body, item, inner, out)


class Template:
    """Parse once, render many times: `Template(text).render({"System": ..., "Prompt": ...})`."""

    def __init__(self, source: str):
        self.source = source
        self.nodes = _Parser(_lex(source)).parse()

    def render(self, data: Any) -> str:
        out: list[str] = []
        _execute(self.nodes, data, _Scope(data), out)
        return "".join(out)

    def references(self, name: str) -> bool:
        """Whether the template mentions field `name` anywhere (Ollama picks its prompt builder by this)."""
        return re.search(rf"\.{re.escape(name)}\b", self.source) is not None


def render(source: str, data: Any) -> str:
    return Template(source).render(data)
