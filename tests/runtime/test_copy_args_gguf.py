"""x-copy args in llama.cpp (issue 16): the grammar a request decodes under holds places, colors, sound names
and numbers to what the request says (the catalog side: tests/test_copy_args.py)."""

from __future__ import annotations

from distill.skills import Catalog, copy_candidates


def _grammar_accepts(backend, grammar, output: str) -> bool:
    """Whether llama.cpp's grammar sampler lets `output`'s tokens through, one by one (the decoder's own check)."""
    import numpy as np

    grammar.reset()
    logits = np.zeros(backend.llm.n_vocab(), dtype=np.float32)
    for token in backend.llm.tokenize(output.encode(), add_bos=False, special=False):
        if not grammar._allowed(np.array([token], dtype=np.intc), logits)[0]:
            return False
        grammar.accept(token)
    return True


def test_llama_cpps_grammar_for_a_request_holds_its_copy_args(smollm2_backend):
    zurich = smollm2_backend.grammar_for("Is it snowing in Zurich?")
    assert _grammar_accepts(smollm2_backend, zurich, '{"skill":"weather","args":{"location":"Zurich"}}')
    assert not _grammar_accepts(smollm2_backend, zurich, '{"skill":"weather","args":{"location":"Zurach"}}')
    timer = smollm2_backend.grammar_for("timer 4 min")
    assert _grammar_accepts(smollm2_backend, timer, '{"skill":"set_timer","args":{"minutes":4}}')
    assert not _grammar_accepts(smollm2_backend, timer, '{"skill":"set_timer","args":{"minutes":44}}')


def test_decoding_a_request_writes_only_its_own_words(smollm2_gguf, catalog):
    """A catalog of the weather skill alone: the untrained base must name a place, and can only take words of
    the request (before: any string its pattern allows)."""
    from distill.runtime.backends import LlamaCppBackend

    only_weather = Catalog({"weather": catalog.skills["weather"]})
    backend = LlamaCppBackend(smollm2_gguf, only_weather, timeout_s=60)
    place = catalog.skills["weather"].args_schema["properties"]["location"]
    for text in ("Do I need an umbrella in Glasgow tomorrow?", "how's the weather looking in montreal"):
        pred = backend.predict(text)
        assert pred.valid and pred.skill == "weather", pred
        assert pred.args["location"] in copy_candidates(text, place, "proper"), pred.args
