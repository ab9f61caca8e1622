"""predict_many's contract with stand-in backends: order, a helper that cannot load, an error that stops all."""

from __future__ import annotations

import threading
import time

import pytest

from distill.runtime.backends import RawPrediction, predict_many


class Echo:
    """Answers each text with its own name; slow enough that two of them interleave."""

    def __init__(self, name: str, fail_on: str | None = None):
        self.name, self.fail_on, self.seen = name, fail_on, []

    def predict(self, text: str, system_prompt: str | None = None) -> RawPrediction:
        if text == self.fail_on:
            raise RuntimeError(f"{self.name} broke on {text}")
        self.seen.append(text)
        time.sleep(0.01)
        return RawPrediction(text=text, output=f"{self.name}:{text}")


def test_every_text_once_in_order_shared_by_the_backends():
    first, others = Echo("a"), []
    texts = [str(i) for i in range(40)]
    out = predict_many(first, texts, workers=3, load_more=lambda: others.append(Echo(f"b{len(others)}")) or others[-1])
    assert [p.text for p in out] == texts
    assert all(p.output.endswith(f":{t}") for p, t in zip(out, texts))
    assert len(others) == 2 and all(o.seen for o in others) and first.seen  # all three took a share
    assert sorted(first.seen + [t for o in others for t in o.seen], key=int) == texts


def test_without_load_more_one_backend_does_everything():
    first = Echo("a")
    assert [p.output for p in predict_many(first, ["x", "y"], workers=4)] == ["a:x", "a:y"]


def test_a_helper_that_cannot_load_leaves_its_share_to_the_others():
    def cannot_load():
        raise OSError("no room for a second context")

    first = Echo("a")
    out = predict_many(first, [str(i) for i in range(10)], workers=2, load_more=cannot_load)
    assert len(first.seen) == 10 and [p.text for p in out] == [str(i) for i in range(10)]


def test_an_error_in_any_backend_is_raised_and_stops_the_rest():
    texts = [str(i) for i in range(30)]
    first, second = Echo("a", fail_on="3"), Echo("b", fail_on="3")
    with pytest.raises(RuntimeError, match="broke on 3"):
        predict_many(first, texts, workers=2, load_more=lambda: second)
    assert len(first.seen) + len(second.seen) < 10  # the other stopped at its next text, not at the end
    assert not [t for t in threading.enumerate() if t.name.startswith("predict-")]  # and was joined
