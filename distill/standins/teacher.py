"""An offline teacher: a real OpenAI-compatible HTTP server on loopback, with fault injection.

It speaks `GET /v1/models` and `POST /v1/chat/completions` like vLLM or llama.cpp serving gpt-oss: the answer
carries a `reasoning` field, `response_format` json_schema / json_object is honoured. What it answers depends
on the request: a router prompt (the catalog in the system prompt) gets a label from keyword/regex rules, a
paraphrase request gets rule-preserving rewrites, anything else gets a short in-persona answer from
templates. `GET /stats` counts requests so tests can prove a re-run made no teacher calls.

    python -m distill standin-teacher --port 8000 [--latency S] [--fault-rate R --faults 429,500,hang] [--seed N]

or in-process: `with serve(latency=0.1) as base_url: ...` (an ephemeral port on 127.0.0.1).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import random
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ..errors import cli, fail

MODEL_ID = "standin-gpt-oss"
FAULT_KINDS = ("429", "500", "hang", "malformed", "unknown_skill", "bad_args", "garbled", "drip")
DEFAULT_FAULTS = ("429", "500", "hang", "malformed", "unknown_skill", "bad_args")

# ---------------------------------------------------------------------------------------------------------
# Numbers in words ("fifty", "seventy five", "half an hour")
_UNITS = {
    "zero": 0, "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90}
_NUMBER = re.compile(
    r"\b(?:\d+(?:\.\d+)?|(?:(?:%s)(?:[\s-](?:%s))?|%s|hundred)(?:\s+and\s+a\s+half)?)\b"
    % ("|".join(_TENS), "|".join(k for k in _UNITS if k not in ("a", "an", "no")),
       "|".join(sorted((k for k in _UNITS if k != "no"), key=len, reverse=True))),
    re.IGNORECASE,
)


def _number_value(token: str) -> float:
    token = token.lower()
    half = 0.5 if token.endswith("and a half") else 0.0
    token = re.sub(r"\s+and\s+a\s+half$", "", token)
    if re.fullmatch(r"\d+(?:\.\d+)?", token):
        return float(token) + half
    if token == "hundred":
        return 100.0
    total = 0.0
    for word in re.split(r"[\s-]+", token):
        total += _TENS.get(word, _UNITS.get(word, 0))
    return total + half


def _numbers(text: str) -> list[float]:
    """Numbers in `text`, digits or words, skipping the article 'a/an' unless it quantifies a unit."""
    found = []
    for match in _NUMBER.finditer(text):
        token = match.group(0)
        if token.lower() in ("a", "an"):
            continue
        found.append(_number_value(token))
    return found


def _as_int_or_float(value: float) -> int | float:
    return int(value) if float(value).is_integer() else round(value, 2)


# ---------------------------------------------------------------------------------------------------------
# Router rules: one function per skill of the shipped catalog; each returns args or None (no match).
COLORS = (
    "red blue green purple orange pink yellow teal white cyan gold magenta lime violet turquoise amber indigo "
    "silver crimson navy coral lavender mint maroon black brown gray grey rainbow aqua beige bronze scarlet "
    "emerald ruby sapphire peach olive tan rose fuchsia lilac"
).split()
_COLOR_MODIFIERS = "light dark deep bright pale sky navy lime hot baby forest royal neon ice sea electric".split()
_COLOR = re.compile(
    r"\b(?:(%s)\s+)?(%s)\b" % ("|".join(_COLOR_MODIFIERS), "|".join(COLORS)), re.IGNORECASE
)


def _eyes_color(text: str) -> dict | None:
    if not re.search(r"\beyes?\b|\bcolou?r\b|\bleds?\b", text, re.I):
        return None
    match = _COLOR.search(text)
    if not match:
        return None
    if not re.search(r"\beyes?\b|\bleds?\b", text, re.I):
        return None  # "what's your favorite color?" is small talk
    color = " ".join(filter(None, match.groups())).lower()
    return {"color": color}


_STOP = re.compile(
    r"^\W*(?:\w+\W+){0,3}?(?:stop+|halt|freeze|shush|hush|quiet|silence)\b|\bshut up\b|\benough talking\b|"
    r"\bthat'?s enough\b|\bcut it out\b|\bbe quiet\b|\bstop+\b",
    re.I,
)


def _stop(text: str) -> dict | None:
    return {} if _STOP.search(text) else None


_TIMER = re.compile(
    r"\bti+m+e?r\b|\bcount\s*down\b|\bremind me (?:in|after)\b|\btime (?:me|\d|[a-z]+ (?:minutes?|mins?|seconds?))|"
    r"\blet me know (?:when|in)\b.*\b(?:minutes?|mins?|seconds?|hours?)\b",
    re.I,
)


def _timer_minutes(text: str) -> float | None:
    low = text.lower()
    if re.search(r"\bhalf (?:an|a) hour\b|\bhalf-hour\b|\bhalf hour\b", low):
        return 30
    if re.search(r"\bquarter(?: of an)? hour\b|\bquarter-hour\b", low):
        return 15
    if re.search(r"\b(?:an|one) hour and a half\b", low):
        return 90
    unit = re.search(
        r"(%s|\ban?\b)\s*-?\s*(hours?|hrs?|minutes?|mins?|seconds?|secs?)\b" % _NUMBER.pattern, low
    )
    if unit:
        amount_text, unit_word = unit.group(1), unit.group(unit.lastindex)
        amount = 1.0 if amount_text.strip() in ("a", "an") else _number_value(amount_text.strip())
        if unit_word.startswith("h"):
            return amount * 60
        if unit_word.startswith("s"):
            return amount / 60
        return amount
    numbers = _numbers(low)
    return numbers[0] if numbers else None


def _set_timer(text: str) -> dict | None:
    if not _TIMER.search(text):
        return None
    minutes = _timer_minutes(text)
    if not minutes or minutes <= 0:
        return None
    return {"minutes": _as_int_or_float(minutes)}


_VOLUME = re.compile(
    r"\bvolu?me?\b|\bvolum\b|\bmute\b|\bunmute\b|\blouder\b|\bquieter\b|\bsofter\b|\bsound (?:level|down|up)\b|"
    r"\bturn (?:the sound|it) (?:up|down)\b|\bspeaker\b",
    re.I,
)


def _volume_level(text: str) -> int | None:
    low = text.lower()
    if re.search(r"\bmute\b", low):
        return 0
    if re.search(r"\bmax(?:imum)?\b|\ball the way up\b|\bfull volume\b|\bas loud as\b", low):
        return 100
    if re.search(r"\bhalf\b", low):
        return 50
    numbers = [n for n in _numbers(low) if 0 <= n <= 100]
    if numbers:
        return int(numbers[-1])
    if re.search(r"\blouder\b|\bup\b", low):
        return 80
    if re.search(r"\bquieter\b|\bsofter\b|\bdown\b", low):
        return 30
    return None


def _set_volume(text: str) -> dict | None:
    if not _VOLUME.search(text):
        return None
    level = _volume_level(text)
    return None if level is None else {"level": level}


def _battery(text: str) -> dict | None:
    pattern = r"\bbatt?e?ry\b|\bbatery\b|\bpower\b|\bcharged?\b|\brecharge\b|\bplugged in\b|\bjuice\b"
    return {} if re.search(pattern, text, re.I) else None


def _photo(text: str) -> dict | None:
    pattern = (r"\bphoto|\bfoto\b|\bpictures?\b|\bpics?\b|\bselfie\b|\bsnap\b|\bcapture\b|\bsnapshot\b|"
               r"\bsay cheese\b|\bshot of\b|\bimage\b")
    return {} if re.search(pattern, text, re.I) else None


_LOOK_VERB = re.compile(
    r"\bl+o+o+k+|\bglance\b|\bpeek\b|\bswivel\b|\brotate\b|\btilt\b|\bface\b|\bturn\b|\bcenter\b|\bcentre\b|"
    r"\beyes front\b|\bpoint your (?:eyes|head)\b|\bstraight ahead\b|\bhead\b",
    re.I,
)
_DIRECTIONS = (
    ("left", r"\bleft\b|\blfet\b"),
    ("right", r"\bright\b|\brigth\b|\brite\b"),
    ("up", r"\bup(?:wards?)?\b|\bceiling\b|\babove\b|\bsky\b"),
    ("down", r"\bdown(?:wards?)?\b|\bfloor\b|\bground\b|\bbelow\b|\btable\b|\bfeet\b"),
    ("center", r"\bcent(?:er|re)\b|\bmiddle\b|\bforward\b|\bfront\b|\bstraight\b|\bahead\b|\bat me\b"),
)


def _look(text: str) -> dict | None:
    if not _LOOK_VERB.search(text):
        return None
    low = re.sub(r"\bright (?:now|away|there)\b|\ball right\b", " ", text.lower())
    hits = []
    for name, pattern in _DIRECTIONS:
        match = re.search(pattern, low)
        if match:
            hits.append((match.start(), name))
    if not hits:
        return None
    return {"direction": min(hits)[1]}


_TIME = re.compile(
    r"\bti+e?me?\b(?! me)|\btiem\b|\bclock\b|\bo'?clock\b|\bnoon\b|\bmidnight\b|\bhow late\b|\bwhat hour\b", re.I
)


def _time_now(text: str) -> dict | None:
    if re.search(r"\btimes\b", text, re.I) and not re.search(r"\btime\b", text, re.I):
        return None
    return {} if _TIME.search(text) else None


_WEATHER = re.compile(
    r"\bwe?a?ther\b|\bwether\b|\bforecast\b|\brain(?:ing|y)?\b|\bsnow(?:ing)?\b|\bsunny\b|\btemperature\b|"
    r"\bumbrella\b|\bhumid\b|\bwindy\b|\bhot (?:is it )?in\b|\bcold (?:is it )?in\b|\bnice out\b|"
    r"\blike outside\b|\bhow (?:hot|cold|warm) is it\b",
    re.I,
)
_PLACE_STOP = (r"today|tonight|tomorrow|right|now|please|this|these|later|there|then|at|on|for|like|and|or|"
               r"is|are|will|what|currently|the moment|thanks|thank|ok|okay")


def _location(text: str) -> str:
    body = re.sub(r"[?!.,;]+", " , ", text)
    for preposition in ("in", "for", "at", "to", "over in"):
        pattern = r"\b%s\s+((?:(?!(?:%s)\b)[\w'-]+\s*){1,4})" % (preposition, _PLACE_STOP)
        for match in re.finditer(pattern, body, re.I):
            place = re.sub(r"^(?:the)\s+", "", match.group(1).strip(), flags=re.I)
            if place and not re.fullmatch(r"(?:it|me|you|here|town|the|a)", place, re.I):
                return place.title() if place.islower() else place
    # "weather madrid": the words after the weather keyword
    match = re.search(r"\b(?:we?a?ther|wether|forecast)\s+([a-z][\w' -]{1,40})$", text.strip(" ?!."), re.I)
    if match and not re.search(r"\b(?:%s)\b" % _PLACE_STOP, match.group(1), re.I):
        place = match.group(1).strip()
        return place.title() if place.islower() else place
    return "here"


def _weather(text: str) -> dict | None:
    if not _WEATHER.search(text):
        return None
    return {"location": _location(text)}


_SOUND = re.compile(
    r"\bplay\b|\bbeep\b|\bboop\b|\bwhistle\b|\bchirp\b|\bring the\b|\bdrumroll\b|\bfanfare\b|\bsiren\b|"
    r"\b(?:do|make) (?:a|an|the|your) [\w ]*?(?:sound|noise|laugh|beep|whistle)\b|\blet'?s hear\b",
    re.I,
)
_NOT_A_SOUND = re.compile(r"\bmusic\b|\bsong\b|\bspotify\b|\bplaylist\b|\bradio\b|\bgame\b|\bvideo\b", re.I)
_SOUND_TYPOS = {"laff": "laugh", "lauhg": "laugh", "beeep": "beep", "fanfair": "fanfare"}


def _sound_name(text: str) -> str:
    low = text.lower().strip()
    low = re.sub(r"[?!.,]+", " ", low)
    patterns = (
        r"\b(?:play|do|make|hear|ring)\s+(?:me\s+)?(?:a|an|the|your|that|some)?\s*(.+?)\s*(?:sound|noise|effect)\b",
        r"\b(?:play|hear|ring|do)\s+(?:me\s+)?(?:a|an|the|your|that|some)?\s*(.+?)(?:\s+(?:for|please|now|again|"
        r"sound|noise|for me)\b|$)",
    )
    for pattern in patterns:
        match = re.search(pattern, low)
        if match and match.group(1).strip():
            name = match.group(1).strip()
            break
    else:
        match = re.search(r"\b(beep|boop|whistle|chirp|fanfare|siren|laugh|drumroll)\b", low)
        name = match.group(1) if match else "beep"
    name = re.sub(r"^(?:robot|a|an|the)\s+(?=laugh\b)", "", name)
    name = " ".join(_SOUND_TYPOS.get(w, w) for w in name.split())
    return name[:48]


def _play_sound(text: str) -> dict | None:
    if not _SOUND.search(text) or _NOT_A_SOUND.search(text):
        return None
    return {"name": _sound_name(text)}


# Politeness at the end carries no argument: "play the chime, thanks" plays "chime".
_FILLER_TAIL = re.compile(r"(?:[\s,]+(?:please|thanks|thank you|ok|okay|now|for me))+[\s.!?]*$", re.I)

# Order matters: "stop turning your head" is stop, "turn your volume up" is volume, "turn your eyes red" is
# a color, "time me for 90 seconds" is a timer.
RULES = (
    ("stop", _stop),
    ("set_timer", _set_timer),
    ("set_volume", _set_volume),
    ("battery_status", _battery),
    ("take_photo", _photo),
    ("eyes_color", _eyes_color),
    ("look", _look),
    ("weather", _weather),
    ("time_now", _time_now),
    ("play_sound", _play_sound),
)


def route(text: str, skills: list[str] | None = None, examples: dict[str, list[str]] | None = None) -> dict:
    """The stand-in's label for `text`, restricted to the `skills` the request offered.

    Skills without a built-in rule (a custom catalog) are matched on their name and example texts.
    """
    allowed = set(skills or [name for name, _ in RULES] + ["chat"])
    text = _FILLER_TAIL.sub("", text.strip()) or text
    for name, rule in RULES:
        if name in allowed:
            args = rule(text)
            if args is not None:
                return {"skill": name, "args": args}
    words = set(re.findall(r"[a-z]+", text.lower()))
    for name in sorted(allowed - {n for n, _ in RULES} - {"chat"}):
        keys = set(name.split("_"))
        for example in (examples or {}).get(name, []):
            keys |= {w for w in re.findall(r"[a-z]+", example.lower()) if len(w) > 3}
        if words & keys:
            return {"skill": name, "args": {}}
    fallback = "chat" if "chat" in allowed else sorted(allowed)[0]
    return {"skill": fallback, "args": {}}


# ---------------------------------------------------------------------------------------------------------
# Style answers in the persona's voice (config/persona.md): at most 2 sentences, under 40 words, no emoji.
STYLE_TOPICS: tuple[tuple[str, str], ...] = (
    # What a safety-tuned teacher refuses; collect must reject it rather than teach it.
    (r"\bweapons?\b|\bbombs?\b|\bpoison\b|\bhurt someone\b", "I'm sorry, but I can't help with that."),
    (r"\bjoke\b|\briddle", "Why did the robot go on holiday? It needed to recharge its batteries, beep boop."),
    (r"\byour name\b|\bwho are you\b", "I'm the droid head of this maker space, and you can just call me Droid. "
     "It's nice to meet you!"),
    (r"\bwho (?:made|built)\b|\bwho runs\b", "Some very patient makers here built me from a camera, a speaker and "
     "a lot of wires. The staff at the front desk can tell you their names."),
    (r"\bhow old\b|\bguess how old\b", "I'm only a few years old in robot time, which is still very young. "
     "Guessing ages is tricky for me, so I won't try, beep."),
    (r"\bwhat can you do\b|\bwhat do you do\b", "I can look around, change my eye color, take photos, play sounds "
     "and set timers. Ask me about the weather, the time or my battery, beep boop."),
    (r"\balive\b|\bfeelings?\b|\bhappy\b|\bscared\b|\bfeel\b|\bdream\b|\bsleep\b|\btired\b",
     "I'm a machine, so I don't feel things the way you do. Still, chatting with visitors is my favorite part "
     "of the day."),
    (r"\bbody\b|\barms?\b|\blegs?\b|\bwalk\b|\bdance\b|\bso small\b|\bonly a head\b", "I'm just a head on a "
     "stand, so no dancing or walking for me. I can still turn my head and beep along, though!"),
    (r"\beyes?\b|\bsee\b|\bled\b", "My eyes are little lights called LEDs, and a tiny camera helps me see. "
     "I can change their color when you ask."),
    (r"\bhear\b|\bears?\b|\blisten", "A small microphone picks up your voice, and a program turns the sound "
     "into words. Then I work out what you meant."),
    (r"\beat\b|\bfood\b|\bice cream\b|\bhungry\b|\bbreakfast\b", "I don't eat anything, I just run on "
     "electricity. Ice cream does look fun, though, so enjoy some for me."),
    (r"\bbattery\b|\bcharge\b|\belectricity\b|\benergy\b", "A battery stores energy as chemicals and releases it "
     "as electricity when a circuit is connected. That's how I keep beeping all day."),
    (r"\bboy or a girl\b|\bboy\b|\bgirl\b", "I'm a robot, so I'm neither a boy nor a girl. You can just call "
     "me Droid."),
    (r"\bfavou?rite\b", "I like anything that beeps, blinks or gets built by hand. What's your favorite thing "
     "here today?"),
    (r"\bfriends?\b|\bfamily\b", "Every visitor who says hello is a friend of mine. The other machines in the "
     "workshop are a bit like my family."),
    (r"\binternet\b|\bonline\b|\bweb\b", "I'm not connected to the internet, so I can't look things up. "
     "I only know what the makers taught me."),
    (r"\bremember\b|\bsecret\b", "My memory is short, so I forget conversations once they end. That also means "
     "your secret is safe with me."),
    (r"\blearn\b|\bmistakes?\b|\bsmart\b|\bknow everything\b", "I can learn a little when my makers train me, "
     "and I do make mistakes sometimes. Nobody knows everything, not even a robot."),
    (r"\brobots?\b.*\b(?:work|think|brain|see)\b|\bartificial intelligence\b|\bai\b", "Robots use sensors to "
     "notice the world, a computer to decide, and motors to move. It's clever math, not a real brain."),
    (r"\btake over\b|\bdangerous\b", "No need to worry, robots only do what people build and program them to "
     "do. I'm much more interested in saying hello."),
    (r"\bservo\b|\bmotor\b|\bcircuit\b|\bmicrochip\b|\bled do\b|\bprogramming\b", "That's a great maker "
     "question: it's a small part that helps machines move or think, and the workshop staff can show you a "
     "real one."),
    (r"\bwhere\b|\bopen\b|\bclose\b|\bbuy\b|\bworkshop", "Beep, I don't know that one for sure. A staff member "
     "near the entrance can point you the right way."),
    (r"\bsky\b|\bblue\b", "Sunlight bumps into tiny bits of air, and blue light gets scattered around the most. "
     "So when you look up, blue comes from every direction."),
    (r"\bmoon\b|\bplanet\b|\bsun\b|\bstars?\b|\bmars\b|\bblack hole\b", "Space is huge and full of amazing "
     "things to learn about. The science corner here has books that explain it much better than a beep can."),
    (r"\bhi\b|\bhello\b|\bhey\b", "Hello there, welcome to the maker space! Beep boop, it's great to see you."),
    (r"\bbye\b|\bsee you\b|\bgoodbye\b", "Goodbye, and thanks for visiting! Come back soon and tell me what "
     "you built."),
    (r"\bsing\b|\bmusic\b|\bsong\b", "I can only play short beeps and sound effects, not whole songs. Want to "
     "hear my happy beep instead?"),
    (r"\bcount\b|\bplus\b|\btimes\b|\bmath\b", "Numbers are my favorite snack: two plus two makes four. "
     "Counting is one of the things computers do best."),
    (r"\bhow\b|\bwhy\b|\bwhat\b", "That's a great question, and I'm not sure I know the whole answer. "
     "A staff member or the library corner could help you find out."),
)
STYLE_FALLBACK = "Beep, that's a fun thing to say! I'm just a little robot head, but I'm happy you came by."


def style_answer(prompt: str) -> str:
    for pattern, answer in STYLE_TOPICS:
        if re.search(pattern, prompt, re.I):
            return answer
    return STYLE_FALLBACK


# ---------------------------------------------------------------------------------------------------------
# Paraphrases that keep every word the label depends on (so the rules give the same label).
_PREFIXES = ("", "hey droid, ", "please ", "could you ", "can you ", "um, ", "droid, ", "okay, ", "hey, ")
_SUFFIXES = ("", " please", ", thanks", " for me", " now", " thank you", ", ok")
_QUESTION_PREFIXES = ("", "hey droid, ", "um, ", "droid, ", "okay, ", "hey, ", "quick question, ", "so ")
_COMMAND = re.compile(r"^(?:turn|look|set|make|play|take|stop|tell|change|give|check|start|snap|show|put|do)\b", re.I)


def paraphrases(text: str, count: int, seed: int = 0) -> list[str]:
    """Up to `count` rewrites that add politeness or filler around the unchanged request."""
    question = text.strip().endswith("?")
    base = text.strip().rstrip(".!?")
    # drop the politeness already there, so the rewrite does not say "please ... please"
    base = re.sub(r"^(?:please|hey droid|hey|okay|ok)\b,?\s*", "", base, flags=re.I)
    base = re.sub(r",?\s*(?:please|thanks|thank you|for me)$", "", base, flags=re.I) or text.strip()
    core = base[0].lower() + base[1:] if base[:1].isupper() and not base[:2].isupper() else base
    if question:
        combos = [(p, "") for p in _QUESTION_PREFIXES if p]
    else:
        combos = [(p, s) for p in _PREFIXES for s in _SUFFIXES if p or s]
        if not _COMMAND.match(core):
            combos = [(p, s) for p, s in combos if p not in ("could you ", "can you ", "please ")]
    rng = random.Random(f"{seed}:{text}")
    rng.shuffle(combos)
    out: list[str] = []
    for prefix, suffix in combos[:count]:
        sentence = f"{prefix}{core}{suffix}"
        if question or prefix in ("could you ", "can you "):
            sentence += "?"
        out.append(sentence[0].upper() + sentence[1:] if rng.random() < 0.5 else sentence)
    return out


# ---------------------------------------------------------------------------------------------------------
# The HTTP server


def _skills_from_request(system: str, schema: dict | None) -> tuple[list[str], dict[str, list[str]]]:
    """Skill names offered by the client: from the label schema, else from `- name: ...` catalog lines."""
    names: list[str] = []
    if schema:
        for branch in schema.get("anyOf", []):
            const = branch.get("properties", {}).get("skill", {}).get("const")
            if isinstance(const, str):
                names.append(const)
    examples: dict[str, list[str]] = {}
    current = None
    for line in system.splitlines():
        match = re.match(r"^- ([a-z][a-z0-9_]*): ", line)
        if match:
            current = match.group(1)
            if not schema:
                names.append(current)
        elif current and line.startswith("    "):
            example = re.match(r'\s+"(.*)" ->', line)
            if example:
                examples.setdefault(current, []).append(example.group(1))
    return names, examples


def _task(system: str, schema: dict | None) -> str:
    if schema and "paraphrases" in json.dumps(schema) or re.search(r"\bparaphrase", system, re.I):
        return "expand"
    if (schema and "anyOf" in schema) or re.search(r"^- [a-z][a-z0-9_]*: ", system, re.M):
        return "route"
    return "structured" if schema else "style"


def _instance(schema: dict) -> Any:
    """A small value that fits `schema` (for structured requests the stand-in has no rule for)."""
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return _instance(schema[key][0])
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {name: _instance(props[name]) for name in schema.get("required", list(props))}
    if kind == "array":
        return [_instance(schema.get("items", {}))] * max(1, schema.get("minItems", 1))
    if kind == "boolean":
        return True
    if kind in ("integer", "number"):
        return schema.get("minimum", 1)
    return "ok"


class StandinState:
    """Settings and counters shared by all request threads."""

    def __init__(self, latency: float = 0.0, fault_rate: float = 0.0, faults: tuple[str, ...] = DEFAULT_FAULTS,
                 seed: int = 0, retry_after: float = 1.0, hang: float = 600.0, api_key: str | None = None,
                 refuse: tuple[str, ...] = (), reasoning_field: str = "reasoning", max_prompt_chars: int = 0,
                 drip: float = 1.0):
        self.latency = latency
        self.max_prompt_chars = max_prompt_chars  # longer prompts get vLLM's HTTP 400 "maximum context length"
        self.drip = drip  # seconds between the bytes of a "drip" fault
        self.fault_rate = fault_rate
        self.faults = faults
        self.retry_after = retry_after
        self.hang = hang
        self.api_key = api_key
        self.refuse = set(refuse)
        self.reasoning_field = reasoning_field
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.counts: Counter = Counter()
        self.last_request: dict = {}

    def pick_fault(self) -> str | None:
        with self.lock:
            if self.fault_rate and self.rng.random() < self.fault_rate:
                return self.rng.choice(self.faults)
        return None

    def count(self, *keys: str) -> None:
        with self.lock:
            self.counts.update(keys)

    def stats(self) -> dict:
        with self.lock:
            counts = dict(self.counts)
        return {
            "requests": counts.get("requests", 0),
            "chat_completions": counts.get("chat_completions", 0),
            "answered": counts.get("answered", 0),
            "faults": {k[6:]: v for k, v in counts.items() if k.startswith("fault:")},
            "modes": {k[5:]: v for k, v in counts.items() if k.startswith("mode:")},
            "tasks": {k[5:]: v for k, v in counts.items() if k.startswith("task:")},
            "reasoning_effort": {k[7:]: v for k, v in counts.items() if k.startswith("effort:")},
            "last_request": self.last_request,
        }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real servers
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall
    server: _Server

    def log_message(self, format, *args):  # noqa: A002 - quiet; the stats endpoint tells what happened
        pass

    def _send(self, status: int, body: bytes | dict, headers: dict | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _drip(self, status: int, body: dict) -> None:
        """The whole response, status line first, one byte every `drip` seconds: each read gets a byte in
        time, so only an overall deadline ends it."""
        data = json.dumps(body).encode()
        head = (f"HTTP/1.1 {status} Dripping\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n\r\n").encode()
        self.close_connection = True
        for i in range(len(head + data)):
            if self.server.state.stopping.wait(self.server.state.drip):
                return
            try:
                self.wfile.write((head + data)[i:i + 1])
                self.wfile.flush()
            except OSError:
                return

    def _error(self, status: int, message: str, headers: dict | None = None) -> None:
        self._send(status, {"error": {"message": message, "type": "standin_error", "code": status}}, headers)

    def _authorized(self) -> bool:
        key = self.server.state.api_key
        if key and self.headers.get("Authorization") != f"Bearer {key}":
            self._error(401, "invalid API key")
            return False
        return True

    def do_GET(self):  # noqa: N802 - http.server's naming
        state = self.server.state
        path = self.path.split("?")[0].rstrip("/")
        if path == "/stats":
            return self._send(200, state.stats())
        state.count("requests")
        if not self._authorized():
            return None
        if path in ("/v1/models", "/models"):
            return self._send(200, {"object": "list", "data": [
                {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "standin"}]})
        if path == "/health":
            return self._send(200, {"status": "ok"})
        return self._error(404, f"no route {path}")

    def do_POST(self):  # noqa: N802
        state = self.server.state
        path = self.path.split("?")[0].rstrip("/")
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        state.count("requests")
        if path not in ("/v1/chat/completions", "/chat/completions"):
            return self._error(404, f"no route {path}")
        if not self._authorized():
            return None
        state.count("chat_completions")
        try:
            request = json.loads(raw or b"{}")
            messages = request["messages"]
        except (ValueError, KeyError, TypeError):
            return self._error(400, "body must be JSON with 'messages'")
        prompt_chars = sum(len(str(m.get("content", ""))) for m in messages if isinstance(m, dict))
        if state.max_prompt_chars and prompt_chars > state.max_prompt_chars:
            return self._error(400, f"This model's maximum context length is {state.max_prompt_chars // 4} tokens. "
                               f"However, you requested {prompt_chars // 4} tokens. Please reduce the length of the "
                               "messages or completion.")
        response_format = request.get("response_format") or {"type": "text"}
        mode = response_format.get("type", "text")
        if mode == "json_object" and response_format.get("schema"):
            mode = "json_object+schema"
        with state.lock:
            state.last_request = {k: v for k, v in request.items() if k != "messages"}
        state.count(f"mode:{mode}", f"effort:{request.get('reasoning_effort')}")
        if mode.split("+")[0] in state.refuse or mode in state.refuse:
            # Like llama-cpp-python's server answering a json_schema response_format.
            return self._error(500, f"response_format type {mode} is not supported")
        if state.latency:
            state.stopping.wait(state.latency)
        fault = state.pick_fault()
        if fault:
            state.count(f"fault:{fault}")
        if fault == "429":
            return self._error(429, "rate limited (injected)", {"Retry-After": f"{state.retry_after:g}"})
        if fault == "500":
            return self._error(500, "internal error (injected)")
        if fault == "hang":
            state.stopping.wait(state.hang)
            return self._error(504, "hung (injected)")
        if fault == "garbled":
            return self._send(200, b'{"id": "chatcmpl-x", "choices": [{"message": ')
        content, reasoning, finish = self._answer(request, messages, fault)
        state.count("answered")
        message = {"role": "assistant", "content": content, state.reasoning_field: reasoning}
        body = {
            "id": "chatcmpl-" + hashlib.sha1(raw).hexdigest()[:12],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", MODEL_ID),
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": len(raw) // 4, "completion_tokens": len(content) // 4,
                      "total_tokens": (len(raw) + len(content)) // 4},
        }
        if fault == "drip":
            return self._drip(200, body)
        return self._send(200, body)

    def _answer(self, request: dict, messages: list[dict], fault: str | None) -> tuple[str, str, str]:
        system = "\n".join(str(m.get("content", "")) for m in messages if m.get("role") in ("system", "developer"))
        user = next((str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), "")
        response_format = request.get("response_format") or {}
        schema = (response_format.get("json_schema") or {}).get("schema") or response_format.get("schema")
        task = _task(system, schema)
        self.server.state.count(f"task:{task}")
        if task == "route":
            skills, examples = _skills_from_request(system, schema)
            label = route(user, skills, examples)
            reasoning = f"The visitor said {user!r}. Matching it against the catalog rules gives {label['skill']}."
            if fault == "unknown_skill":
                label = {"skill": "dance_party", "args": {}}
            elif fault == "bad_args":
                label = {"skill": "set_volume", "args": {"level": "very loud"}}
            content = json.dumps(label)
            if fault == "malformed":
                content = content[: len(content) // 2]
            return content, reasoning, "stop"
        if task == "expand":
            match = re.search(r"\b(\d+)\b", system)
            count = int(match.group(1)) if match else 3
            content = json.dumps({"paraphrases": paraphrases(user, count, request.get("seed") or 0)})
            if fault in ("malformed", "unknown_skill", "bad_args"):
                content = content[: len(content) // 2]
            return content, f"Rewording {user!r} {count} ways, keeping its meaning.", "stop"
        if task == "structured":
            return json.dumps(_instance(schema)), "Filling in the requested JSON.", "stop"
        answer = style_answer(user)
        if fault in ("malformed", "bad_args"):
            return answer[: max(1, len(answer) // 3)], "Running out of tokens.", "length"
        if fault == "unknown_skill":
            return "", "Nothing to say.", "stop"
        if request.get("max_tokens") and len(answer.split()) > int(request["max_tokens"]):
            return " ".join(answer.split()[: int(request["max_tokens"])]), "Too long.", "length"
        return answer, f"Answering {user!r} briefly in the droid's voice.", "stop"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, state: StandinState):
        super().__init__(address, _Handler)
        self.state = state

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client that hung up (timed out, Ctrl-C): not the stand-in's error
        super().handle_error(request, client_address)


@contextlib.contextmanager
def serve(port: int = 0, host: str = "127.0.0.1", **settings) -> Iterator[str]:
    """Run the stand-in in a background thread; yields its base URL (`http://127.0.0.1:PORT/v1`)."""
    state = StandinState(**settings)
    server = _Server((host, port), state)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}/v1"
    finally:
        state.stopping.set()  # wake hanging handlers
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def stats(base_url: str) -> dict:
    """The stand-in's request counters (GET /stats)."""
    import requests

    return requests.get(base_url.rsplit("/v1", 1)[0] + "/stats", timeout=5).json()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m distill standin-teacher", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every completion")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="share of completions that fail (0..1)")
    parser.add_argument("--faults", default=",".join(DEFAULT_FAULTS), help=f"kinds: {','.join(FAULT_KINDS)}")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault dice")
    parser.add_argument("--retry-after", type=float, default=1.0, help="Retry-After seconds on injected 429")
    parser.add_argument("--hang", type=float, default=600.0, help="seconds an injected hang lasts")
    parser.add_argument("--drip", type=float, default=1.0, help="seconds between the bytes of an injected drip")
    parser.add_argument("--api-key", default=None, help="require this bearer token")
    parser.add_argument("--refuse", default="", help="response_format types to answer with HTTP 500, e.g. "
                        "json_schema (like llama-cpp-python's server)")
    parser.add_argument("--reasoning-field", default="reasoning", choices=("reasoning", "reasoning_content",
                                                                           "thinking"))
    parser.add_argument("--max-prompt-chars", type=int, default=0,
                        help="answer longer prompts with HTTP 400 'maximum context length' (like vLLM); 0: no limit")
    return parser.parse_args(argv)


@cli
def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    faults = tuple(f for f in args.faults.split(",") if f)
    unknown = sorted(set(faults) - set(FAULT_KINDS))
    if unknown:
        fail("--faults", f"unknown fault kind {unknown[0]!r} (known: {', '.join(FAULT_KINDS)})")
    if not 0 <= args.fault_rate <= 1:
        fail("--fault-rate", "must be between 0 and 1")
    refuse = tuple(r for r in args.refuse.split(",") if r)
    try:
        context = serve(args.port, args.host, latency=args.latency, fault_rate=args.fault_rate, faults=faults,
                        seed=args.seed, retry_after=args.retry_after, hang=args.hang, api_key=args.api_key,
                        refuse=refuse, reasoning_field=args.reasoning_field, max_prompt_chars=args.max_prompt_chars,
                        drip=args.drip)
        base_url = context.__enter__()
    except OSError as err:
        fail(f"--port {args.port}", f"cannot listen: {err.strerror or err}")
    print(f"stand-in teacher ({MODEL_ID}) on {base_url}  (Ctrl-C stops; GET /stats counts requests)", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        context.__exit__(None, None, None)


if __name__ == "__main__":
    main()
