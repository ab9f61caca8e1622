#!/usr/bin/env python3
"""A minimal conductor: ask the router, act when the student is sure, let the big chat model answer otherwise.

    python examples/conductor.py "turn your eyes red" "why is the sky blue?"   # the router service on the robot
    python examples/conductor.py --service http://127.0.0.1:8765               # type requests, Ctrl-D ends
    python examples/conductor.py --in-process --ollama http://orin.local:11434 --model router-student \
        --fallback-config config/teacher.json                                 # the library, no service

By default it calls the router service (`distill-route serve`, installed by `make deploy`): POST /route with
what was said and the conversation so far, which the service's chat model sees when it answers a fallback.
`--in-process` routes with `distill.runtime.Router` in this process instead (a checkout, no service running).
On the robot the handlers below would drive the servos, LEDs and speaker; here they print what they would do.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
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


DEFAULT_SERVICE = "http://127.0.0.1:8765"
CONTEXT_TURNS = 6  # what the chat model sees of the conversation so far

# A router is a function: (text, conversation so far) -> the decision as a dict (the service's JSON).
RouteFn = Callable[[str, list], dict]


def service_router(url: str, timeout: float = 30.0) -> RouteFn:
    """POST /route on the router service; an unreachable service is one fallback decision, never a crash."""
    import requests

    session = requests.Session()

    def route(text: str, context: list) -> dict:
        try:
            response = session.post(f"{url.rstrip('/')}/route", json={"text": text, "context": context},
                                    timeout=timeout)
            response.raise_for_status()
            return response.json()
        except (requests.RequestException, ValueError) as err:
            return {"skill": "chat", "args": {}, "source": "fallback", "reason": "service_unreachable",
                    "latency_ms": 0.0, "reply": None, "detail": f"{url}: {type(err).__name__}: {err}"}

    return route


def in_process_router(router: Router) -> RouteFn:
    return lambda text, context: router.route(text).to_dict()


def handle(route: RouteFn, text: str, context: list) -> str:
    decision = route(text, context[-CONTEXT_TURNS:])
    if decision["skill"] in HANDLERS:  # the student was sure: act, no big model involved
        action = HANDLERS[decision["skill"]](decision["args"])
        return f"[student {decision['confidence']:.2f}, {decision['latency_ms']:.0f} ms] {action}"
    # chat: either the student chose it, or it was in doubt (decision["reason"] says why).
    why = "student chose chat" if decision["source"] == "student" else f"fallback: {decision['reason']}"
    reply = decision.get("reply") or f"(no chat answer: {decision.get('detail') or 'no chat model configured'})"
    context += [{"role": "user", "content": text}, {"role": "assistant", "content": reply}]
    return f"[{why}, {decision['latency_ms']:.0f} ms] {reply}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("texts", nargs="*", help="requests (default: read lines from stdin)")
    parser.add_argument("--service", default=DEFAULT_SERVICE, help=f"the router service (default {DEFAULT_SERVICE})")
    parser.add_argument("--in-process", action="store_true", help="route with the library here, not the service")
    parser.add_argument("--student", default=str(DEFAULT_STUDENT))
    parser.add_argument("--gguf", default=str(DEFAULT_GGUF))
    parser.add_argument("--ollama", help="Ollama URL (instead of the GGUF)")
    parser.add_argument("--model", help="Ollama model name")
    parser.add_argument("--fallback-config", help="the big chat model (teacher.json format)")
    parser.add_argument("--persona", default="config/persona.md")
    args = parser.parse_args()

    route = service_router(args.service) if not args.in_process else in_process_router(local_router(args))
    context: list[dict] = []
    texts = args.texts or (line.strip() for line in sys.stdin)
    for text in texts:
        if text:
            print(f"> {text}\n  {handle(route, text, context)}", flush=True)


def local_router(args: argparse.Namespace) -> Router:
    student = args.student if student_json_path(args.student).is_file() else None
    fallback = FallbackChat.from_config(args.fallback_config, args.persona) if args.fallback_config else None
    # No trained student: the router never acts (reason no_student) and the chat model answers everything.
    router = Router.from_student(student, gguf=args.gguf, ollama=args.ollama, model=args.model, fallback=fallback,
                                 log=DecisionLog.from_env())
    if router.unavailable:
        print(f"note: {router.unavailable[1]}", file=sys.stderr)
    return router


if __name__ == "__main__":
    main()
