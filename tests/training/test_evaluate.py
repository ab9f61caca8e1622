"""The evaluator's pieces that need no model: the label language, forced text, metrics."""

from __future__ import annotations

import pytest

from distill.skills import normalize_args
from distill.training.evaluate import markdown_table, prediction_rows, score_predictions
from distill.training.mlx_decode import LabelConstraint
from distill.runtime.backends import RawPrediction


@pytest.fixture(scope="module")
def constraint(catalog):
    return LabelConstraint(catalog)


@pytest.mark.parametrize("text", ['{"skill":"look","args":{"direction":"left"}}', '{"skill":"time_now","args":{}}',
                                  '{"skill":"set_timer","args":{"minutes":1.5}}', '{"skill":"set_volume","args":{"level":40}}',
                                  ' {"skill":"weather","args":{"location":"New York"}}'])
def test_canonical_labels_are_complete(constraint, text):
    assert constraint.complete(text) and constraint.viable(text[:-3])


@pytest.mark.parametrize("text", ['{"skill":"dance"', '{"skill":"look","args":{"direction":"sideways"',
                                  '{"skill":"time_now","args":{"x"', '{"skill":"set_volume","args":{"level":"40"',
                                  '{"skill": "look"', '\n\n{"skill"'])
def test_outside_the_language_is_not_viable(constraint, text):
    assert not constraint.viable(text)


@pytest.mark.parametrize(
    "text, forced",
    [('{"skill":"time_now', '","args":{}}'), ('{"skill":"look', '","args":{"direction":"'),
     ('{"skill":"look","args":{"direction":"ri', 'ght"}}'), ('{"skill":"ti', ""), ('{"skill":"set_', ""),
     ('{"skill":"weather","args":{"location":"Oslo"', "}}")],
)
def test_forced_text_starts_only_after_the_skill_name(constraint, text, forced):
    assert constraint.forced(text) == forced


def test_scores_accuracy_args_and_per_skill(catalog):
    records = [{"text": "a", "skill": "look", "args": {"direction": "left"}}, {"text": "b", "skill": "chat", "args": {}},
               {"text": "c", "skill": "eyes_color", "args": {"color": "Red"}}, {"text": "d", "skill": "stop", "args": {}}]
    preds = [RawPrediction("a", valid_json=True, skill="look", args={"direction": "right"}, latency_ms=10),
             RawPrediction("b", valid_json=True, skill="chat", args={}, latency_ms=20),
             RawPrediction("c", valid_json=True, skill="eyes_color", args={"color": " red"}, latency_ms=30),
             RawPrediction("d", valid_json=False, label_error="invalid_json", latency_ms=40)]
    m = score_predictions(preds, records, catalog.names)
    assert m["skill_accuracy"] == 0.75 and m["args_exact"] == 0.5 and m["valid_json_rate"] == 0.75
    assert m["per_skill"]["stop"]["recall"] == 0.0 and m["per_skill"]["look"]["f1"] == 1.0
    assert ["stop", "(invalid)", 1] in m["confusion"]
    assert (m["latency_ms_p50"], m["latency_ms_p95"]) == (20, 40)
    assert "| x | 4 | 0.750 | 0.500 | 0.750 |" in markdown_table({"x": m})


def test_normalize_args():
    assert normalize_args({"color": "  Navy   Blue "}) == {"color": "navy blue"}
    assert normalize_args({"minutes": 5.0}) == {"minutes": 5}


def test_prediction_rows_keep_each_records_answer_for_the_review_page():
    records = [{"id": "i1", "text": "a", "skill": "look", "args": {"direction": "left"}},
               {"text": "d", "skill": "stop"}]
    preds = [RawPrediction("a", valid_json=True, skill="look", args={"direction": "right"}, confidence=0.91234567),
             RawPrediction("d", valid_json=False, label_error="invalid_json", confidence=0.2)]
    rows = prediction_rows(records, preds)
    assert rows[0] == {"id": "i1", "text": "a", "gold": {"skill": "look", "args": {"direction": "left"}},
                       "predicted": {"skill": "look", "args": {"direction": "right"}}, "confidence": 0.9123,
                       "error": None}
    assert rows[1]["predicted"] is None and rows[1]["error"] == "invalid_json" and rows[1]["gold"]["args"] == {}


def test_eval_router_report_keeps_every_held_out_prediction(tmp_path, catalog, monkeypatch):
    """main() writes the per-record rows beside the metrics (a stub backend stands in for the MLX student)."""
    import json

    from distill.student import StudentSpec, copy_catalog
    from distill.training import evaluate

    student = tmp_path / "student"
    student.mkdir()
    StudentSpec(name="r", system_prompt="route", catalog=copy_catalog(catalog, student),
                catalog_hash=catalog.hash).save(student)
    records = [{"id": "i1", "text": "tell me a joke", "skill": "chat", "args": {}},
               {"id": "i2", "text": "look left", "skill": "look", "args": {"direction": "left"}}]
    (student / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    class Stub:
        def __init__(self):
            self.catalog = catalog

        def predict(self, text, system_prompt=None):
            return RawPrediction(text, valid_json=True, skill="chat", args={}, confidence=0.75)

    monkeypatch.setattr(evaluate, "ensure_openblas", lambda: None)
    monkeypatch.setattr(evaluate.MlxBackend, "from_student", classmethod(lambda cls, folder: Stub()))
    out = tmp_path / "reports" / "router_eval.json"
    evaluate.main(["--student", str(student), "--no-baseline", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["results"]["mlx student"]["skill_accuracy"] == 0.5
    assert [(r["id"], r["predicted"]["skill"], r["confidence"]) for r in report["predictions"]] == [
        ("i1", "chat", 0.75), ("i2", "chat", 0.75)]


def test_the_export_gate_reuses_eval_routers_numbers_for_the_same_student_and_split(tmp_path, monkeypatch):
    """make eval-router stores the MLX student's metrics on its split; make gguf's gate reads them while the adapters
    and the split are unchanged (~45 s of the demo), and evaluates again as soon as either changes."""
    import json

    from distill.training import evaluate

    student = tmp_path / "student"
    student.mkdir()
    (student / "adapters.safetensors").write_bytes(b"weights v1")
    (student / "test.jsonl").write_text(json.dumps({"text": "look left", "skill": "look", "args": {}}) + "\n")
    runs = []
    monkeypatch.setattr(evaluate, "evaluate_mlx", lambda folder, records: runs.append(len(records)) or {"n": len(runs)})
    split = student / "test.jsonl"
    evaluate.cached_mlx_metrics(student, split, evaluate.SPLIT_CACHE, {"n": 1, "skill_accuracy": 0.9})  # eval-router
    assert evaluate.cached_mlx_metrics(student, split, evaluate.SPLIT_CACHE) == {"n": 1, "skill_accuracy": 0.9}
    assert runs == []
    (student / "adapters.safetensors").write_bytes(b"weights v2")  # retrained: the stored numbers are stale
    assert evaluate.cached_mlx_metrics(student, split, evaluate.SPLIT_CACHE) == {"n": 1} and runs == [1]
    split.write_text(split.read_text() * 2)  # another split: evaluated again
    assert evaluate.cached_mlx_metrics(student, split, evaluate.SPLIT_CACHE) == {"n": 2} and runs == [1, 2]
    assert evaluate.cached_mlx_metrics(student, split, evaluate.SPLIT_CACHE) == {"n": 2} and runs == [1, 2]


def test_mlx_decoding_picks_from_the_top_k_the_tokens_the_whole_vocabulary_gives(base_model_dir, catalog, monkeypatch):
    """MlxBackend tries the 64 likeliest tokens before sorting the vocabulary (~8 ms a step): TOP_K 1 (the
    argmax, then mostly the fallback to the full sort), 64 and the whole vocabulary decode the same labels."""
    from distill.prompting import brief_route_prompt
    from distill.training import mlx_decode

    backend = mlx_decode.MlxBackend.load(str(base_model_dir), catalog, brief_route_prompt(catalog))
    texts = ["turn your eyes red", "set a timer for 5 minutes", "what is the weather like?", "look to the left"]
    decoded = {}
    for top_k in (1, 64, 10**6):
        monkeypatch.setattr(mlx_decode, "TOP_K", top_k)
        decoded[top_k] = [(p.output, round(p.confidence, 6)) for p in map(backend.predict, texts)]
    assert decoded[1] == decoded[64] == decoded[10**6]
