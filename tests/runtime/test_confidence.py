"""The confidence formula (docs/runtime.md, "Confidence, exactly"): the skill name and the argument values the
model chose, each value with the byte that ends it; keys and punctuation (forced by the grammar) left out."""

from __future__ import annotations

import math

import pytest

from distill.runtime.backends import (Piece, args_value_spans, decision_spans, interpret, label_confidence,
                                      skill_confidence)


def pieces(*tokens: tuple[str, float]) -> list[Piece]:
    return [Piece(text.encode(), math.log(p)) for text, p in tokens]


def test_a_free_text_value_counts_with_its_closing_quote():
    # "New" then a doubtful end: the model might have stopped at "New" or gone on to "New York".
    out = pieces(('{"skill":"', 0.9), ("weather", 0.95), ('","args":{"location":"', 0.5), ("New", 0.7),
                 (" York", 0.6), ('"}}', 0.8))
    assert label_confidence(out, "weather") == pytest.approx(0.95 * 0.7 * 0.6 * 0.8)
    assert skill_confidence(out, "weather") == pytest.approx(0.95)  # the name alone: the args slip is invisible


def test_a_number_counts_with_the_byte_that_ends_it():
    # 3 then "0" or "}": where the number stops is a choice (3 vs 30).
    out = pieces(('{"skill":"set_volume","args":{"level":', 1.0), ("3", 0.9), ("0", 0.8), ("}}", 0.7))
    data = b"".join(p.data for p in out)
    assert [data[a:b] for a, b in args_value_spans(data)] == [b"30}"]
    # the first token also spells the skill name: it counts once, whole
    assert label_confidence(out, "set_volume") == pytest.approx(1.0 * 0.9 * 0.8 * 0.7)


def test_keys_and_forced_punctuation_do_not_count():
    out = pieces(('{"', 0.1), ("skill", 0.1), ('":"', 0.1), ("look", 0.9), ('","', 0.1), ("args", 0.1),
                 ('":{"', 0.1), ("direction", 0.1), ('":"', 0.1), ("left", 0.8), ('"}}', 0.95))
    assert label_confidence(out, "look") == pytest.approx(0.9 * 0.8 * 0.95)


def test_arg_free_skills_are_the_skill_name_alone():
    out = pieces(('{"skill":"', 0.5), ("time", 0.9), ("_now", 0.8), ('","args":{}}', 0.3))
    assert label_confidence(out, "time_now") == pytest.approx(0.9 * 0.8)


def test_a_prefix_name_needs_its_closing_quote_and_several_values_all_count():
    out = pieces(('{"skill":"st', 0.5), ("op", 0.8), ('","args":{"a":', 0.9), ("1", 0.6), (',"b":"', 0.9),
                 ("x", 0.7), ('","c":true', 0.4), ("}}", 0.5))
    data = b"".join(p.data for p in out)
    assert [data[a:b] for a, b in decision_spans(data, "stop", ["stop", "stop_all"])] == [
        b'stop"', b"1,", b'x"', b"true}"]
    # st(0.5) op(0.8) ","args":{"a":(0.9, closing quote) 1(0.6) ,"b":"(0.9, the ',' ends 1) x(0.7)
    # ","c":true(0.4, x's closing quote and true) }}(0.5, ends true)
    assert label_confidence(out, "stop", ["stop", "stop_all"]) == pytest.approx(0.5 * 0.8 * 0.9 * 0.6 * 0.9 * 0.7 * 0.4 * 0.5)


def test_whitespace_and_escapes_inside_values():
    out = pieces((' { "skill" : "', 1.0), ("play_sound", 0.9), ('", "args": { "name" : "', 1.0), ('say \\"hi', 0.5),
                  ('\\""', 0.6), (" } }", 0.2))
    data = b"".join(p.data for p in out)
    assert [data[a:b] for a, b in args_value_spans(data)] == [b'say \\"hi\\""']
    assert label_confidence(out, "play_sound") == pytest.approx(0.9 * 0.5 * 0.6)


def test_unreadable_args_count_every_token_after_the_skill():
    out = pieces(('{"skill":"', 1.0), ("look", 0.9), ('","args":{"direction"', 0.5), ("??", 0.5))
    assert label_confidence(out, "look") == pytest.approx(0.9 * 0.5 * 0.5)
    assert label_confidence(out, "stop") == 0.0  # not the skill it spells


def test_interpret_reports_both_confidences(catalog):
    output = '{"skill":"eyes_color","args":{"color":"teal"}}'
    out = pieces(('{"skill":"', 1.0), ("eyes", 0.99), ("_color", 0.99), ('","args":{"color":"', 1.0), ("te", 0.4),
                  ("al", 0.9), ('"}}', 0.99))
    pred = interpret("make your eyes teal", output, out, catalog, 1.0)
    assert pred.valid
    assert pred.skill_confidence == pytest.approx(0.99 * 0.99)
    assert pred.confidence == pytest.approx(0.99 * 0.99 * 0.4 * 0.9 * 0.99)


def test_a_number_the_request_holds_counts_among_the_numbers_it_allows(catalog):
    """x-copy: number. For "count down 2 minutes" the model wants "25" (p 0.90 for "5", 0.06 for "}"): 25 is not
    said, so between the values allowed (2 alone: the request says no other number) the "2" it stopped at is sure. A string held to the
    request's words keeps the raw p (the mass on words the request does not have is doubt)."""
    from distill.runtime.backends import grounded_options

    text = "count down 2 minutes"
    out = [Piece(b'{"skill":"', math.log(0.9)), Piece(b"set_timer", math.log(0.95)),
           Piece(b'","args":{"minutes":', 0.0), Piece(b"2", math.log(0.8), [("2", math.log(0.8)), ("1", math.log(0.1))]),
           Piece(b"}}", math.log(0.06), [("5", math.log(0.9)), ("}}", math.log(0.06)), ("0", math.log(0.02)),
                                         ("}", math.log(0.01))])]
    options = grounded_options(catalog, text, "set_timer")
    assert options == {"minutes": [b"2,", b"2}"]}
    raw = label_confidence(out, "set_timer", catalog.names)
    assert raw == pytest.approx(0.95 * 0.8 * 0.06)
    # "2": "1" is not allowed (no 1 is said); "}}": "5" and "0" are not, "}" is
    held = label_confidence(out, "set_timer", catalog.names, options)
    assert held == pytest.approx(0.95 * 1.0 * (0.06 / 0.07))
    pred = interpret(text, b"".join(p.data for p in out).decode(), out, catalog, 1.0)
    assert pred.valid and pred.confidence == pytest.approx(held)
    assert grounded_options(catalog, "weather in Lisbon", "weather") == {}  # strings: raw p
    assert grounded_options(catalog, "mute yourself", "set_volume") == {}  # no number said: free, raw p


def test_a_string_value_counts_its_spellings_up_to_letter_case():
    """`Lagos` copied from the request: the model splits its mass between "L", "lag" and " Lag", one city spelled
    three ways (measured on a small-set student: 0.44, 0.42, 0.13); the value's p is their sum."""
    out = [Piece(b'{"skill":"weather","args":{"location":"', 0.0), Piece(b"L", math.log(0.44),
           [("L", math.log(0.44)), ("lag", math.log(0.42)), (" Lag", math.log(0.13)), ("lu", math.log(0.002))]),
           Piece(b"agos", math.log(0.96), [("agos", math.log(0.96)), ("AGOS", math.log(0.01)), ("ag", math.log(0.02))]),
           Piece(b'"}}', math.log(0.99), [('"}}', math.log(0.99)), (" Nigeria", math.log(0.005))])]
    # "lu" spells another word; "ag" ends in "agos" too (a shorter token of the same value) and so does "AGOS"
    assert label_confidence(out, "weather") == pytest.approx((0.44 + 0.42 + 0.13) * (0.96 + 0.01 + 0.02) * 0.99)
    assert skill_confidence(out, "weather") == 1.0


def test_another_word_stays_doubt_and_a_space_only_counts_before_the_first_letter():
    # "Munich": the model wants "Mun" + "chen" (Munchen, not the request's word): that mass is doubt
    out = [Piece(b'{"skill":"weather","args":{"location":"', 0.0), Piece(b"Mun", math.log(0.9), [(" Mun", math.log(0.05))]),
           Piece(b"ich", math.log(0.33), [("chen", math.log(0.66)), (" ich", math.log(0.005)), ("ICH", math.log(0.004))]),
           Piece(b'"}}', 0.0)]
    # " Mun" is the value with a space before it (counts); " ich" inside the word is another spelling (does not)
    assert label_confidence(out, "weather") == pytest.approx((0.9 + 0.05) * (0.33 + 0.004))


def test_spellings_do_not_apply_to_numbers_or_the_skill_name():
    out = [Piece(b'{"skill":"', 0.0), Piece(b"look", math.log(0.5), [("Look", math.log(0.4))]),
           Piece(b'","args":{"direction":"', 0.0), Piece(b"left", math.log(0.5), [("Left", math.log(0.3)),
                                                                                     ("right", math.log(0.2))]),
           Piece(b'"}}', 0.0)]
    assert label_confidence(out, "look") == pytest.approx(0.5 * (0.5 + 0.3))  # the name: exact; the enum value: any case
    num = [Piece(b'{"skill":"set_volume","args":{"level":', 0.0), Piece(b"5", math.log(0.6), [("5", math.log(0.6)),
           ("05", math.log(0.3))]), Piece(b"}}", 0.0)]
    assert label_confidence(num, "set_volume") == pytest.approx(0.6)
