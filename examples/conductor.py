#!/usr/bin/env python3
"""A minimal conductor: ask the router student, act when it is sure, let the big chat model answer otherwise.

    python examples/conductor.py                                     # type requests, Ctrl-D ends
    python examples/conductor.py "turn your eyes red" "why is the sky blue?"
    python examples/conductor.py --ollama http://orin.local:11434 --model router-student \
        --fallback-config config/teacher.json

On the robot the handlers below would drive the servos, LEDs and speaker; here they print what they would do.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distill.runtime.decisions import DecisionLog  # noqa: E402
from distill.runtime.router import DEFAULT_GGUF, DEFAULT_STUDENT, FallbackChat, Router  # noqa: E402
from distill.student import student_json_path  # noqa: E402

# One handler per skill of config/skills.yaml; each gets the validated args.
HANDLERS = {
    "look": lambda a: f"turning the head {a['direction']}",
    "eyes_color": lambda a: f"eye LEDs -> {a['color']}",
    "set_volume": lambda a: f"volume -> {a['level']}%",
    "set_timer": lambda a: f"timer for {a['minutes']} min",
    "weather": lambda a: f"looking up the weather in {a['location']}",
    "time_now": lambda a: "telling the time",
    "take_photo": lambda a: "click",
    "battery_status": lambda a: "reading the battery level",
    "stop": lambda a: "stopping everything",
    "play_sound": lambda a: f"playing {a['name']}",
}


def handle(router: Router, text: str) -> str:
    decision = router.route(text)
    if decision.skill in HANDLERS:  # the student was sure: act, no big model involved
        action = HANDLERS[decision.skill](decision.args)
        return f"[student {decision.confidence:.2f}, {decision.latency_ms:.0f} ms] {action}"
    # chat: either the student chose it, or it was in doubt (decision.reason says why).
    why = "student chose chat" if decision.source == "student" else f"fallback: {decision.reason}"
    reply = decision.reply or "(no chat model configured; --fallback-config names one)"
    return f"[{why}, {decision.latency_ms:.0f} ms] {reply}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("texts", nargs="*", help="requests (default: read lines from stdin)")
    parser.add_argument("--student", default=str(DEFAULT_STUDENT))
    parser.add_argument("--gguf", default=str(DEFAULT_GGUF))
    parser.add_argument("--ollama", help="Ollama URL (instead of the GGUF)")
    parser.add_argument("--model", help="Ollama model name")
    parser.add_argument("--fallback-config", help="the big chat model (teacher.json format)")
    parser.add_argument("--persona", default="config/persona.md")
    args = parser.parse_args()

    student = args.student if student_json_path(args.student).is_file() else None
    fallback = FallbackChat.from_config(args.fallback_config, args.persona) if args.fallback_config else None
    # No trained student: the router never acts (reason no_student) and the chat model answers everything.
    router = Router.from_student(student, gguf=args.gguf, ollama=args.ollama, model=args.model, fallback=fallback,
                                 log=DecisionLog.from_env())
    if router.unavailable:
        print(f"note: {router.unavailable[1]}", file=sys.stderr)
    texts = args.texts or (line.strip() for line in sys.stdin)
    for text in texts:
        if text:
            print(f"> {text}\n  {handle(router, text)}", flush=True)


if __name__ == "__main__":
    main()
