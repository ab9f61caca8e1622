"""The review page's Flask app: Labels, Fix (one record), Student and Runs, server-rendered.

Only a person at this machine may use it: the server binds 127.0.0.1 (distill.review.__main__), and every request
must name a loopback host (a web page elsewhere cannot reach it through DNS rebinding) and every save must come
from the page itself (Origin / Sec-Fetch-Site), so another site open in the same browser cannot write overrides.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from flask import Flask, abort, flash, redirect, render_template, request, url_for
from markupsafe import Markup

from .. import REPO_ROOT
from ..overrides import append_override, make_override
from ..prompting import normalize_text
from ..skills import DEFAULT_CATALOG, Catalog, LabelError, load_catalog
from . import charts
from .data import (SHOWS, Cached, Paths, Row, View, harvest_files, label_text, load_overrides_view,
                   load_predictions, load_teacher, read_harvested, read_json_file, same_label)
from .forms import label_from_form, skill_fields
from .runs import collect_runs, run_files

PAGE_SIZE = 100
# Below this many records a skill is flagged: the 10% test split then holds at most one record of it, so its
# recall in the Student view is a single coin flip.
MIN_EXAMPLES = 20
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]"}
FILTER_KEYS = ("skill", "show", "q")
DONE = {"accept": "accepted", "change": "changed", "reject": "rejected"}


class Review:
    """The files one page reads, each re-read only when it changes."""

    def __init__(self, paths: Paths, catalog: Catalog, min_examples: int = MIN_EXAMPLES):
        self.paths, self.catalog, self.min_examples = paths, catalog, min_examples
        self._teacher = Cached(lambda: load_teacher(paths, catalog),
                               lambda: [paths.routes, paths.rejected, paths.audit])
        self._predictions = Cached(lambda: load_predictions(paths.eval_report), lambda: [paths.eval_report])
        self._harvested = Cached(lambda: read_harvested(paths), lambda: harvest_files(paths))
        self._runs = Cached(lambda: collect_runs(paths), lambda: run_files(paths))

    def view(self) -> View:
        overrides, bad = load_overrides_view(self.paths)
        predictions, problem = self._predictions.get()
        return View(self._teacher.get(), overrides, bad, predictions, problem, self._harvested.get())

    def runs(self):
        return self._runs.get()


def create_app(root: str | Path = ".", *, routes: str | Path | None = None, catalog: str | Path | None = None,
               min_examples: int = MIN_EXAMPLES) -> Flask:
    """The app for the project under `root` (data/, reports/, models/); the catalog defaults to root's
    config/skills.yaml, else the checkout's (a demo --workdir links config/ in, a bare data dir does not)."""
    paths = Paths.under(root, routes)
    if catalog is None:
        candidates = (paths.root / DEFAULT_CATALOG, REPO_ROOT / DEFAULT_CATALOG)
        catalog = next((c for c in candidates if c.is_file()), candidates[0])
    review = Review(paths, load_catalog(catalog), min_examples)
    app = Flask(__name__)
    app.secret_key = os.urandom(16)  # only for the one-shot "saved" messages; new on every start
    app.extensions["review"] = review
    app.jinja_env.filters["label"] = label_text
    app.jinja_env.filters["pct"] = _pct
    app.jinja_env.filters["args"] = lambda args: json.dumps(args or {}, ensure_ascii=False, separators=(",", ":"))
    app.jinja_env.filters["urlq"] = _query
    app.jinja_env.filters["done"] = lambda action: DONE.get(action, action)
    app.jinja_env.globals.update(SHOWS=SHOWS, catalog=review.catalog, paths=paths, relative=lambda p: _rel(p, paths))
    app.before_request(_only_this_machine)
    _routes(app, review)
    return app


def _hostname(host: str) -> str:
    """`127.0.0.1:8765` -> `127.0.0.1`, `[::1]:8765` -> `[::1]`."""
    return host.split("]")[0] + "]" if host.startswith("[") else host.rsplit(":", 1)[0]


def _only_this_machine():
    if _hostname(request.host or "") not in LOOPBACK_HOSTS:
        abort(403, "the review page answers on 127.0.0.1 only")
    if request.method == "POST":
        origin = request.headers.get("Origin")
        if origin and origin != "null" and urlsplit(origin).netloc != request.host:
            abort(403, "saves come from the review page only")
        if request.headers.get("Sec-Fetch-Site") not in (None, "same-origin", "none"):
            abort(403, "saves come from the review page only")


def _pct(value) -> str:
    return "—" if not isinstance(value, (int, float)) else f"{value * 100:.1f}%"


def _rel(path: Path, paths: Paths) -> str:
    try:
        return str(Path(path).relative_to(paths.root))
    except ValueError:
        return str(path)


def _filters() -> dict[str, str]:
    """The list's filter, from the query string only (a change form's own `skill` field is the new label's)."""
    skill, show, query = (request.args.get(k, "").strip() for k in FILTER_KEYS)
    return {"skill": skill, "show": show if show in SHOWS else "all", "q": query}


def _query(filters: dict[str, str], **extra) -> str:
    items = {k: v for k, v in {**filters, **extra}.items() if v not in ("", None) and not (k == "show" and v == "all")}
    return urlencode(items)


def _routes(app: Flask, review: Review) -> None:
    @app.get("/")
    def index():
        return redirect(url_for("labels"))

    @app.get("/labels")
    def labels():
        view, filters = review.view(), _filters()
        selected = view.select(filters["skill"], filters["show"], filters["q"])
        pages = max(1, math.ceil(len(selected) / PAGE_SIZE))
        page = min(max(1, request.args.get("page", 1, type=int)), pages)
        shown = selected[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]
        counts = view.skill_counts(review.catalog)
        bars = [(name, n, n < review.min_examples, url_for("labels") + "?" + _query({**filters, "skill": name}))
                for name, n in sorted(counts.items(), key=lambda item: -item[1])]
        return render_template(
            "labels.html", view=view, rows=shown, total=len(selected), page=page, pages=pages, filters=filters,
            query=_query(filters), page_query=lambda p: _query(filters, page=p), counts=counts,
            chart=charts.bars(bars), few=[n for n, c in counts.items() if c < review.min_examples],
            min_examples=review.min_examples, show_counts=view.show_counts(), first=(page - 1) * PAGE_SIZE,
            selected_index=request.args.get("sel", 0, type=int))

    @app.get("/record/<key>")
    def record(key: str):
        return _record_page(review, review.view(), key)

    @app.post("/record/<key>/fix")
    def fix(key: str):
        view, filters = review.view(), _filters()
        row = view.teacher.by_key.get(key)
        if row is None or not row.fixable:
            abort(404, f"no record {key} to fix")
        action = request.form.get("action", "")
        before = view.label(row) or row.teacher_label  # what training used until now, else the teacher's answer
        after = label_from_form(request.form, review.catalog) if action == "change" else view.acceptable(row)
        if action == "accept" and after is None:
            message = "not saved: there is no valid label to accept here; change it or reject it"
            return _record_page(review, view, key, error=message), 422
        try:
            line = make_override(row.key, row.text, action, before, after, review.catalog, source="review")
        except LabelError as err:
            return _record_page(review, view, key, error=f"not saved: {err}", typed=request.form), 422
        except ValueError as err:
            return _record_page(review, view, key, error=f"not saved: {err}", typed=request.form), 400
        current = view.override(row)
        append_override(review.paths.overrides, line)
        flash(_saved_message(row, line))
        if "seen" in request.form and current is not None and current.time != request.form["seen"]:
            flash(f"note: another tab had saved a fix for this record at {current.time}; yours is the latest now")
        if request.form.get("next") == "list":
            page = request.form.get("page", "1")
            return redirect(url_for("labels") + "?" + _query(filters, page=page, sel=request.form.get("sel", "0")))
        after_this = _neighbours(view.select(**_select_args(filters)), key)[1]
        if after_this:
            return redirect(url_for("record", key=after_this) + "?" + _query(filters))
        return redirect(url_for("labels") + "?" + _query(filters))

    @app.get("/student")
    def student():
        return _student_page(review)

    @app.get("/runs")
    def runs():
        found = review.runs()
        points = [(r.gguf_bytes / 1e6, r.best_accuracy, r.name) for r in found
                  if r.gguf_bytes and r.best_accuracy is not None]
        chart = charts.scatter(points, "GGUF size (MB)", "held-out skill accuracy")
        return render_template("runs.html", runs=found, chart=chart, models=review.paths.models)

    @app.errorhandler(403)
    @app.errorhandler(404)
    def refused(err):
        return render_template("error.html", code=err.code, message=err.description), err.code


def _select_args(filters: dict[str, str]) -> dict[str, str]:
    return {"skill": filters["skill"], "show": filters["show"], "query": filters["q"]}


def _neighbours(rows: list[Row], key: str) -> tuple[str | None, str | None]:
    keys = [r.key for r in rows]
    if key not in keys:
        return None, keys[0] if keys else None
    i = keys.index(key)
    return (keys[i - 1] if i > 0 else None), (keys[i + 1] if i + 1 < len(keys) else None)


def _saved_message(row: Row, line: dict) -> str:
    text = row.text if len(row.text) <= 60 else row.text[:57] + "..."
    if line["action"] == "change":
        return f"saved: “{text}” is now {label_text(line['after'])}"
    return f"saved: {DONE[line['action']]} “{text}”"


def _record_page(review: Review, view: View, key: str, error: str | None = None, typed=None):
    row = view.teacher.by_key.get(key)
    if row is None:
        abort(404, f"no record {key} (the teacher's files may have changed)")
    filters = _filters()
    selection = view.select(**_select_args(filters))
    previous, following = _neighbours(selection, key)
    label = view.label(row)
    prediction = view.prediction(row)
    if typed is not None:  # a refused change: show what the person typed, not the old label
        chosen, args = typed.get("skill", ""), {}
        forms = {name: skill_fields(s, {f.name: typed.get(f.input_name) for f in skill_fields(s)})
                 for name, s in review.catalog.skills.items()}
    else:
        start = label or row.teacher_label or (prediction.predicted if prediction else None)
        chosen = start["skill"] if start and start["skill"] in review.catalog.skills else review.catalog.names[0]
        args = start.get("args", {}) if start else {}
        forms = {name: skill_fields(s, args if name == chosen else {}) for name, s in review.catalog.skills.items()}
    current = view.override(row)
    return render_template(
        "record.html", row=row, view=view, label=label, override=current, prediction=prediction,
        chosen=chosen, forms=forms, error=error, filters=filters, query=_query(filters),
        previous=previous, following=following, position=_position(selection, key), total=len(selection),
        answer=_answer_text(row.answer), seen=current.time if current else "",
        agrees=prediction is not None and label is not None and same_label(prediction.predicted, label))


def _position(rows: list[Row], key: str) -> int | None:
    for i, row in enumerate(rows):
        if row.key == key:
            return i + 1
    return None


def _answer_text(answer) -> str:
    if answer is None:
        return ""
    if isinstance(answer, str):
        return answer
    return json.dumps(answer, ensure_ascii=False, indent=1)


def _student_page(review: Review):
    view = review.view()
    report, problem = read_json_file(review.paths.eval_report)
    metrics, results = {}, {}
    if isinstance(report, dict) and isinstance(report.get("results"), dict):
        results = report["results"]
        metrics = results.get("mlx student") or {}
    elif not problem:
        problem = f"{review.paths.eval_report.name}: no results"
    skills = list(review.catalog.names)
    cells: dict[tuple[str, str], int] = {}
    for item in metrics.get("confusion", []) if isinstance(metrics, dict) else []:
        if isinstance(item, list) and len(item) == 3:
            gold, pred, count = item
            cells[(gold, pred)] = cells.get((gold, pred), 0) + int(count)
    rows = [s for s in skills if any(g == s for g, _ in cells)] + sorted({g for g, _ in cells} - set(skills))
    columns = [s for s in skills if any(p == s for _, p in cells)] + sorted({p for _, p in cells} - set(skills))
    top = max(cells.values(), default=1)
    errors = []
    for prediction in view.predictions.values():
        if not prediction.correct:
            row = view.teacher.by_text.get(normalize_text(prediction.text))
            errors.append((prediction, row.key if row else prediction.id))
    errors.sort(key=lambda item: -item[0].confidence)  # confident errors first: those the robot acts on
    calibration, calibration_problem = read_json_file(review.paths.calibration)
    curve = Markup("")
    if isinstance(calibration, dict):
        curve = charts.calibration_curve(calibration.get("curve") or [], calibration.get("threshold"),
                                         calibration.get("target"))
    return render_template(
        "student.html", report=report, problem=problem, metrics=metrics, results=results, cells=cells,
        confusion_rows=rows, confusion_columns=columns, top=top, per_skill=metrics.get("per_skill", {}),
        errors=errors, predictions_problem=view.predictions_problem, calibration=calibration,
        calibration_problem=calibration_problem, curve=curve, n_predictions=len(view.predictions))
