"""Training: data contracts, prompt masking, splits, bad inputs, resume and data-parallel runs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distill.prompting import normalize_text
from distill.training import datasets
from tests.support.data import HAND_LABELED, write_routes

TRAIN = "train/finetune_router_mlx.py"


def train_cmd(base, data, out, *extra):
    return [sys.executable, TRAIN, "--base", base, "--train_jsonl", data, "--out", out, "--epochs", "1", "--lr", "2e-4", "--batch", "4", *extra]


def test_split_is_deterministic_stratified_and_disjoint(catalog, small_routes):
    records = datasets.load_routes(small_routes, catalog)
    a = datasets.split_records(records, key="text", group="skill", valid_frac=0.2, test_frac=0.2, seed=0)
    b = datasets.split_records(list(reversed(records)), key="text", group="skill", valid_frac=0.2, test_frac=0.2, seed=0)
    assert a == b
    texts = {name: {normalize_text(r["text"]) for r in split} for name, split in a.items()}
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["valid"] and not texts["valid"] & texts["test"]
    assert {r["skill"] for r in a["test"]} == {"eyes_color", "look", "time_now", "chat"}
    assert sum(len(s) for s in a.values()) == len(records)


def test_phrasing_families_join_a_seed_and_its_wrapped_paraphrases():
    texts = ["look left", "hey droid, look left, ok", "Could you look left, thanks?", "look left and up",
             "look right", "stop", "Please stop.", "stop the music", "What time is it?", "um, what time is it"]
    families = sorted(sorted(texts[i] for i in f) for f in datasets.phrasing_families(texts))
    assert families == sorted([
        sorted(["look left", "hey droid, look left, ok", "Could you look left, thanks?", "look left and up"]),
        ["look right"], sorted(["stop", "Please stop."]), ["stop the music"],
        sorted(["What time is it?", "um, what time is it"])])


def test_router_split_keeps_each_seeds_paraphrases_in_one_split():
    """What calibration needs: validation phrasings the student never trained on. Built as `make expand` builds
    the demo's data (the stand-in teacher's paraphrases of each seed); split record by record, the same data
    scatters families across splits (so this test can fail)."""
    from distill.standins.teacher import paraphrases

    seeds = {"look": ["look left", "look right", "look up", "look down at the floor", "turn your head to the left",
                      "glance over your right shoulder", "what is behind you", "look at the ceiling"],
             "stop": ["stop", "be quiet", "shut up", "cancel that", "stop talking", "halt right now",
                      "enough of that", "silence please"]}
    records, family_of = [], {}
    for skill, texts in seeds.items():
        for seed_text in texts:
            for text in [seed_text, *paraphrases(seed_text, 4, seed=1)]:
                family_of[normalize_text(text)] = seed_text
                records.append({"text": text, "skill": skill, "args": {}})

    def scattered(splits):
        where = {}
        for name, split in splits.items():
            for r in split:
                where.setdefault(family_of[normalize_text(r["text"])], set()).add(name)
        return [seed for seed, names in where.items() if len(names) > 1]

    kwargs = dict(key="text", group="skill", valid_frac=0.15, test_frac=0.15)
    for seed in range(3):
        grouped = datasets.split_records(records, seed=seed, families=True, **kwargs)
        assert scattered(grouped) == [], seed
        assert {r["skill"] for r in grouped["valid"]} == {r["skill"] for r in grouped["test"]} == {"look", "stop"}
        assert sum(len(s) for s in grouped.values()) == len(records)
        assert grouped == datasets.split_records(list(reversed(records)), seed=seed, families=True, **kwargs)
    assert scattered(datasets.split_records(records, seed=0, **kwargs))  # record by record: siblings split up


def test_duplicates_by_normalized_text_are_dropped(catalog, tmp_path):
    rows = [("Look LEFT!", "look", {"direction": "left"}), ("look   left", "look", {"direction": "left"})]
    assert len(datasets.load_routes(write_routes(tmp_path / "r.jsonl", rows), catalog)) == 1


def test_prompt_masking_trains_only_the_assistant_turn(base_model_dir):
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    from distill.training.train import build_datasets

    tokenizer = load_tokenizer(base_model_dir)
    chat = datasets.router_chat({"text": "turn your eyes red", "skill": "eyes_color", "args": {"color": "red"}})
    tokens, offset = build_datasets(tokenizer, [chat]).process(chat)
    assert tokenizer.decode(tokens[offset:]).startswith('{"skill":"eyes_color","args":{"color":"red"}}<|im_end|>')
    assert "turn your eyes red" in tokenizer.decode(tokens[:offset])


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "no records"),
        ('{"text": "hi", "skill": "chat", "args": {}}\n{"text": broken\n', ":2: invalid JSON"),
        ('{"text": "dance now", "skill": "dance", "args": {}}\n', ":1: skill: unknown_skill"),
        ('{"text": "look", "skill": "look", "args": {"direction": "sideways"}}\n', ":1: args: bad_args"),
        ('{"skill": "chat", "args": {}}\n', ":1: text: missing or empty"),
    ],
)
def test_bad_training_data_is_one_clear_error(cli, tmp_path, base_model_dir, content, message):
    data = tmp_path / "routes.jsonl"
    data.write_text(content)
    result = cli(*train_cmd(base_model_dir, data, tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {data}") and message in lines[0], lines
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_unloadable_hub_base_leaves_nothing_behind(cli, tmp_path, small_routes):
    result = cli(*train_cmd("no-such-org/no-such-model", small_routes, tmp_path / "out"), env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no-such-org/no-such-model: --base: cannot load base model"), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["routes.jsonl"]


def test_missing_base_is_one_clear_error(cli, tmp_path, small_routes):
    result = cli(*train_cmd(tmp_path / "no-such-model", small_routes, tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'no-such-model'}: --base: base model not found (expected a model dir with config.json, or a Hugging Face id)"
    ]


def test_refuses_to_overwrite_another_student(cli, tmp_path, small_routes, base_model_dir):
    out = tmp_path / "out"
    out.mkdir()
    (out / "student.json").write_text(json.dumps({"base": "other/base", "created": "yesterday"}))
    (out / "adapters.safetensors").write_bytes(b"precious")
    result = cli(*train_cmd(base_model_dir, small_routes, out))
    assert result.returncode == 2
    assert "already holds a student" in result.stderr and "--force" in result.stderr
    assert (out / "adapters.safetensors").read_bytes() == b"precious"


@pytest.mark.slow
def test_interrupt_leaves_a_resumable_checkpoint(tmp_path, small_routes, base_model_dir):
    from distill.blas import env_with_openblas

    out, staging = tmp_path / "router", tmp_path / "router.partial"
    proc = subprocess.Popen(train_cmd(base_model_dir, small_routes, out, "--iters", "400", "--batch", "2"),
                            env=env_with_openblas(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not (staging / "adapter_config.json").exists() and time.time() < deadline:
        time.sleep(0.5)
    time.sleep(8)  # a few iterations
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "--resume" in err
    progress = json.loads((staging / "progress.json").read_text())
    assert 0 <= progress["iterations"] < 400 and (staging / "adapters.safetensors").is_file()
    assert not out.exists()

    result = subprocess.run(train_cmd(base_model_dir, small_routes, out, "--iters", str(progress["iterations"] + 2), "--batch", "2", "--resume"),
                            env=env_with_openblas(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    student = json.loads((out / "student.json").read_text())
    assert student["settings"]["iters"] == progress["iterations"] + 2
    assert not staging.exists()


@pytest.mark.slow
def test_data_parallel_ranks_see_the_same_loss(tmp_path, small_routes, base_model_dir):
    """Two ranks over MLX's ring backend on loopback (what `make train-router HOSTS=a,b` runs across Macs)."""
    from distill.blas import env_with_openblas

    launcher = [str(Path(sys.executable).parent / "mlx.launch"), "-n", "2", "--backend", "ring", "--"]
    cmd = launcher + train_cmd(base_model_dir, small_routes, tmp_path / "router", "--iters", "2", "--batch", "2", "--num-layers", "2")
    result = subprocess.run(cmd, env=env_with_openblas(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    losses = {}
    for line in (result.stdout + result.stderr).splitlines():
        if ": final train loss " in line:
            rank = line.split("rank ", 1)[1].split("/", 1)[0]
            losses[rank] = float(line.rsplit(" ", 1)[1])
    assert set(losses) == {"0", "1"}, result.stdout[-2000:]
    assert losses["0"] == pytest.approx(losses["1"], rel=1e-6)
    assert json.loads((tmp_path / "router" / "student.json").read_text())["settings"]["world_size"] == 2
