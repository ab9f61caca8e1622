"""The review page's test project, a small project dir that looks like the demo's after a round: labels (with split
votes, rejects, a corrupt line, a label the catalog refuses), the teacher's audit log, a harvested prompt, an
evaluation report with per-record predictions, calibration and export reports, a trained student (deployed) and an
older run; plus the headless Chromium the browser tests drive and the app served on a loopback port."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

from tests.support import ROOT

TEACHER = "gpt-oss-20b"
CREATED = "2026-11-25T10:{:02d}:00Z"

# (text, skill, args): the labelled records, a few per skill, the way the stand-in teacher answers.
LABELS = [
    ("look to your left", "look", {"direction": "left"}),
    ("could you look up at the ceiling", "look", {"direction": "up"}),
    ("face me again please", "look", {"direction": "center"}),
    ("turn your head right", "look", {"direction": "right"}),
    ("glance down at the table", "look", {"direction": "down"}),
    ("turn your eyes red", "eyes_color", {"color": "red"}),
    ("make your eyes glow teal", "eyes_color", {"color": "teal"}),
    ("can your eyes be purple", "eyes_color", {"color": "purple"}),
    ("switch the eye lights to green", "eyes_color", {"color": "green"}),
    ("volume to 30", "set_volume", {"level": 30}),
    ("mute yourself", "set_volume", {"level": 0}),
    ("turn it up to 80 percent", "set_volume", {"level": 80}),
    ("set a timer for five minutes", "set_timer", {"minutes": 5}),
    ("remind me in half an hour", "set_timer", {"minutes": 30}),
    ("start a 90 second timer", "set_timer", {"minutes": 1.5}),
    ("what's the weather in Lisbon", "weather", {"location": "Lisbon"}),
    ("will it rain in Tokyo today?", "weather", {"location": "Tokyo"}),
    ("how cold is it in Oslo", "weather", {"location": "Oslo"}),
    ("what time is it?", "time_now", {}),
    ("got the time?", "time_now", {}),
    ("take a picture of me", "take_photo", {}),
    ("snap a photo of the room", "take_photo", {}),
    ("how much battery do you have left?", "battery_status", {}),
    ("are you running low on power?", "battery_status", {}),
    ("stop", "stop", {}),
    ("be quiet right now", "stop", {}),
    ("play the fanfare", "play_sound", {"name": "fanfare"}),
    ("do your beep sound", "play_sound", {"name": "beep"}),
    ("play the doorbell sound", "play_sound", {"name": "doorbell"}),
    ("tell me a joke", "chat", {}),
    ("who built you?", "chat", {}),
    ("can you order me a pizza?", "chat", {}),
    ("what's your favourite colour", "chat", {}),
    ("look at the weather outside", "look", {"direction": "left"}),  # the teacher's mistake the tests fix
]
SPLIT = {"what's your favourite colour": ("eyes_color", {"color": "favourite"}),
         "look at the weather outside": ("weather", {"location": "outside"})}
REJECTED = [
    ("make it louder than loud", "bad_args", "level: 'very loud' is not of type 'integer'",
     '{"skill":"set_volume","args":{"level":"very loud"}}'),
    ("dance for me", "unknown_skill", "'dance'", '{"skill":"dance","args":{}}'),
]
# Held-out predictions of the student: (text, predicted skill, args, confidence); the rest are right.
STUDENT_ERRORS = {
    "how cold is it in Oslo": ("time_now", {}, 0.93),
    "start a 90 second timer": ("set_timer", {"minutes": 90}, 0.71),
    "look at the weather outside": ("weather", {"location": "outside"}, 0.55),
}
HELD_OUT = ["look to your left", "turn your eyes red", "volume to 30", "how cold is it in Oslo",
            "start a 90 second timer", "what time is it?", "take a picture of me", "stop", "play the fanfare",
            "tell me a joke", "look at the weather outside", "who built you?"]
HARVESTED = "look at the weather outside"
STUDENT_DIR = "models/router_student_mlx"
GGUF_BYTES = 105_700_000


def record_id(text: str) -> str:
    import hashlib

    from distill.prompting import normalize_text

    return hashlib.sha256(normalize_text(text).encode()).hexdigest()[:12]


def _write_jsonl(path: Path, records: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))


def _routes(votes: int = 3, corrupt_line: bool = True) -> list:
    records = []
    for i, (text, skill, args) in enumerate(LABELS):
        records.append({"id": record_id(text), "text": text, "skill": skill, "args": args,
                        "votes": votes - 1 if text in SPLIT else votes, "teacher": TEACHER,
                        "created": CREATED.format(i % 60)})
    if corrupt_line:
        records.insert(7, '{"id": "torn", "text": "turn your ey')  # a corrupt line (an editor's or a crash's)
    records.append({"id": record_id("do a backflip"), "text": "do a backflip", "skill": "backflip", "args": {},
                    "votes": 3, "teacher": TEACHER, "created": CREATED.format(59)})  # the catalog refuses it
    return records


def _audit() -> list:
    lines = []
    for text, skill, args in LABELS:
        answers = [(skill, args)] * 3
        if text in SPLIT:
            answers[2] = SPLIT[text]
        for s, a in answers:
            lines.append({"time": "2026-11-25T10:00:00Z", "tag": record_id(text), "key": "k", "endpoint": "e",
                          "mode": "json_schema", "latency_s": 0.4, "finish_reason": "stop", "reasoning": "",
                          "content": json.dumps({"skill": s, "args": a})})
    return lines


def _predictions() -> list:
    gold = {text: (skill, args) for text, skill, args in LABELS}
    rows = []
    for text in HELD_OUT:
        skill, args = gold[text]
        wrong = STUDENT_ERRORS.get(text)
        predicted = {"skill": wrong[0], "args": wrong[1]} if wrong else {"skill": skill, "args": args}
        rows.append({"id": record_id(text), "text": text, "gold": {"skill": skill, "args": args},
                     "predicted": predicted, "valid": True, "confidence": wrong[2] if wrong else 0.97,
                     "error": None})
    return rows


def _metrics(rows: list, skills: list[str], latency: float) -> dict:
    confusion: dict[tuple[str, str], int] = {}
    for r in rows:
        key = (r["gold"]["skill"], r["predicted"]["skill"])
        confusion[key] = confusion.get(key, 0) + 1
    per_skill = {}
    for s in skills:
        tp = confusion.get((s, s), 0)
        predicted = sum(c for (_, p), c in confusion.items() if p == s)
        actual = sum(c for (g, _), c in confusion.items() if g == s)
        precision, recall = (tp / predicted if predicted else 0.0), (tp / actual if actual else 0.0)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_skill[s] = {"precision": precision, "recall": recall, "f1": f1, "support": actual}
    hits = sum(r["gold"]["skill"] == r["predicted"]["skill"] for r in rows)
    exact = sum(r["gold"] == r["predicted"] for r in rows)
    n = len(rows)
    return {"n": n, "skill_accuracy": hits / n, "args_exact": exact / n, "valid_json_rate": 1.0,
            "valid_label_rate": 1.0, "latency_ms_p50": latency, "latency_ms_p95": latency * 1.4,
            "per_skill": per_skill, "confusion": [[g, p, c] for (g, p), c in sorted(confusion.items())]}


def build_review_project(root: Path, catalog, corrupt_line: bool = True) -> Path:
    """Lay the demo-like project out under `root`; returns root. Without `corrupt_line` training can read it."""
    _write_jsonl(root / "data/routes.jsonl", _routes(corrupt_line=corrupt_line))
    _write_jsonl(root / "data/routes.audit.jsonl", _audit())
    _write_jsonl(root / "data/routes.rejected.jsonl", [
        {"id": record_id(t), "text": t, "reason": reason, "detail": detail, "raw": raw, "teacher": TEACHER,
         "created": CREATED.format(30)} for t, reason, detail, raw in REJECTED])
    (root / "prompts").mkdir(parents=True, exist_ok=True)
    (root / "prompts/harvested.txt").write_text(f"# harvested by distill.harvest\n{HARVESTED}\n")

    rows = _predictions()
    skills = catalog.names
    student = root / STUDENT_DIR
    student.mkdir(parents=True)
    gold = {t: (s, a) for t, s, a in LABELS}
    test = [{"id": record_id(t), "text": t, "skill": gold[t][0], "args": gold[t][1]} for t in HELD_OUT]
    train = [{"id": record_id(t), "text": t, "skill": s, "args": a} for t, s, a in LABELS if t not in HELD_OUT]
    _write_jsonl(student / "test.jsonl", test)
    _write_jsonl(student / "train.jsonl", train)
    _write_jsonl(student / "valid.jsonl", train[:4])
    (student / "adapters.safetensors").write_bytes(b"adapters v1" * 100)
    (student / "student.json").write_text(json.dumps({
        "name": "router_student", "kind": "router", "base": "models/base-smollm2-135m", "system_prompt": "route",
        "splits": {"train": len(train), "valid": 4, "test": len(test)}, "threshold": 0.896,
        "settings": {"iters": 100, "batch": 8}, "created": "2026-11-25T11:00:00+00:00"}))
    deployed = root / (STUDENT_DIR + ".deployed")
    deployed.mkdir(parents=True)
    (deployed / "adapters.safetensors").write_bytes((student / "adapters.safetensors").read_bytes())
    (deployed / "student.json").write_text((student / "student.json").read_text())
    (deployed / "deployed.json").write_text(json.dumps({"student": STUDENT_DIR, "gguf": "gguf/router-student.gguf",
                                                        "deployed": "2026-11-25T12:00:00+00:00"}))
    older = root / "models/router_qwen_mlx"
    older.mkdir(parents=True)
    (older / "student.json").write_text(json.dumps({
        "name": "router_qwen", "kind": "router", "base": "models/base-qwen2-0.5b", "system_prompt": "route",
        "splits": {"train": 300, "valid": 33, "test": 33}, "settings": {"iters": 200},
        "created": "2026-11-24T09:00:00+00:00"}))
    (older / "fixed_eval.json").write_text(json.dumps({"metrics": {"n": 33, "skill_accuracy": 0.909,
                                                                   "args_exact": 0.878}}))
    gguf = root / "gguf/router-student.gguf"
    gguf.parent.mkdir(parents=True)
    with gguf.open("wb") as handle:  # sparse: the size is what the page shows
        handle.truncate(GGUF_BYTES)

    mlx, q4 = _metrics(rows, skills, 868.0), _metrics(rows, skills, 612.0)
    reports = root / "reports"
    reports.mkdir()
    (reports / "router_eval.json").write_text(json.dumps({
        "student": STUDENT_DIR, "split": "test",
        "results": {"mlx student": mlx, "router-student.gguf": {**q4, "size_bytes": GGUF_BYTES},
                    "untrained base": {**_metrics([{**r, "predicted": {"skill": "chat", "args": {}}} for r in rows],
                                                  skills, 664.0)}},
        "predictions": rows}))
    (reports / "export.json").write_text(json.dumps({
        "student": STUDENT_DIR, "split": "test", "n_records": len(rows), "passed": True,
        "variants": {"mlx": {"metrics": mlx}, "q4": {"metrics": q4, "size_bytes": GGUF_BYTES},
                     "f16": {"metrics": mlx, "size_bytes": 271_100_000}}}))
    curve = [{"threshold": t, "covered": c, "correct": k, "precision": k / c, "coverage": c / 40}
             for t, c, k in ((0.99, 20, 20), (0.95, 30, 30), (0.9, 36, 36), (0.8, 38, 37), (0.6, 40, 38))]
    (reports / "calibration.json").write_text(json.dumps({
        "student": STUDENT_DIR, "gguf": "gguf/router-student.gguf", "threshold": 0.9, "precision": 1.0,
        "coverage": 0.9, "reached": True, "target": 0.99, "total": 40, "curve": curve}))
    return root


# ---- the browser and the served app ------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
# Without these, Chromium's background traffic (component updates, sync, field trials) tries to leave the machine.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1280,800", "--lang=en-US")


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not CHROMIUM or not CHROMEDRIVER:
        return "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


class LiveReview:
    """The review app served on 127.0.0.1:<free port> in a thread, as `make review` serves it."""

    def __init__(self, root: Path):
        from werkzeug.serving import make_server

        from distill.review import create_app

        self.root = root
        self.server = make_server("127.0.0.1", 0, create_app(root, catalog=ROOT / "config" / "skills.yaml"),
                                  threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def overrides(self) -> Path:
        return self.root / "data" / "overrides.jsonl"

    def override_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.overrides.read_text().splitlines()] if self.overrides.exists() else []

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
