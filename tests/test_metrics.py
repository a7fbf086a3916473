"""Metrics of chapter 5, checked against cases worked out by hand.

The entity-level cases follow conlleval (the CoNLL shared-task script that seqeval
reproduces): an ``I-X`` that does not continue an ``X`` entity starts a new one.
The SQuAD cases follow the official v1.1 evaluation script's normalisation.
"""
import pytest

from bertmini.metrics import (accuracy, bio_entities, entity_scores, exact_match, expected_calibration_error,
                              macro_f1, normalize_answer, reliability_bins, squad_scores, token_f1)


def test_accuracy():
    assert accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    assert accuracy([2], [2]) == 1.0


def test_macro_f1_by_hand():
    # class 0: tp=1 fp=1 fn=1 -> F1 = 2/4 = 0.5 ; class 1: tp=2 fp=1 fn=1 -> 4/6
    preds = [0, 0, 1, 1, 1]
    refs = [0, 1, 1, 1, 0]
    assert macro_f1(preds, refs) == pytest.approx((0.5 + 4 / 6) / 2)


def test_macro_f1_weights_rare_class_equally():
    # always predicting the majority class: accuracy 0.9, macro-F1 only ~0.47
    refs = [0] * 9 + [1]
    preds = [0] * 10
    assert accuracy(preds, refs) == pytest.approx(0.9)
    assert macro_f1(preds, refs) == pytest.approx((18 / 19 + 0.0) / 2)


def test_macro_f1_with_fixed_label_set_skips_absent_classes():
    assert macro_f1([0, 1], [0, 1], labels=[0, 1, 2]) == 1.0


@pytest.mark.parametrize("bad", [([], []), ([1, 2], [1])])
def test_metrics_reject_empty_or_mismatched(bad):
    with pytest.raises(ValueError):
        accuracy(*bad)
    with pytest.raises(ValueError):
        macro_f1(*bad)


@pytest.mark.parametrize("tags, entities", [
    (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 2), ("LOC", 3, 4)]),
    (["O", "O"], []),
    # broken: I- without B- starts an entity
    (["O", "I-PER", "I-PER", "O"], [("PER", 1, 3)]),
    # broken: type changes inside an entity -> two entities
    (["B-PER", "I-LOC", "I-LOC"], [("PER", 0, 1), ("LOC", 1, 3)]),
    # B- right after B- of the same type -> two entities
    (["B-PER", "B-PER"], [("PER", 0, 1), ("PER", 1, 2)]),
    # entity running to the end of the sentence
    (["O", "B-ORG", "I-ORG"], [("ORG", 1, 3)]),
    # multi-dash types, as in WNUT's 'sports-team' (type is everything after the first dash)
    (["B-sports-team", "I-sports-team"], [("sports-team", 0, 2)]),
])
def test_bio_entities(tags, entities):
    assert bio_entities(tags) == entities


def test_bio_entities_rejects_non_bio_tags():
    with pytest.raises(ValueError, match="not BIO"):
        bio_entities(["B-PER", "PER"])


def test_entity_scores_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-PER"],  # PER right, LOC typed wrong
            ["B-ORG", "B-ORG"]]                 # ORG right, one spurious ORG
    s = entity_scores(gold, pred)
    assert (s["n_gold"], s["n_predicted"], s["n_correct"]) == (3, 4, 2)
    assert s["precision"] == pytest.approx(2 / 4)
    assert s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))


def test_entity_scores_boundary_error_earns_nothing():
    # one token short of the gold span: token accuracy 3/4, entity F1 0
    s = entity_scores([["B-LOC", "I-LOC", "I-LOC", "O"]], [["B-LOC", "I-LOC", "O", "O"]])
    assert s["f1"] == 0.0


def test_entity_scores_all_o_is_zero_not_an_error():
    s = entity_scores([["O", "O"]], [["O", "O"]])
    assert s == dict(precision=0.0, recall=0.0, f1=0.0, n_gold=0, n_predicted=0, n_correct=0)


def test_entity_scores_rejects_length_mismatch():
    with pytest.raises(ValueError, match="one tag per word"):
        entity_scores([["O", "O"]], [["O"]])


def test_normalize_answer_like_squad():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("an apple, a pear") == "apple pear"
    # articles only as whole words: 'theatre' keeps its 'the'
    assert normalize_answer("Theatre") == "theatre"


def test_exact_match_and_token_f1():
    assert exact_match("the Eiffel tower", "Eiffel Tower.") == 1.0
    assert exact_match("Eiffel", "Eiffel Tower") == 0.0
    # pred 'eiffel' vs gold 'eiffel tower': P=1, R=1/2 -> F1 = 2/3
    assert token_f1("Eiffel", "Eiffel Tower") == pytest.approx(2 / 3)
    # repeated tokens count with multiplicity: 'a a b' vs 'a b' (articles dropped!)
    assert token_f1("x x y", "x y") == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert token_f1("completely wrong", "Eiffel Tower") == 0.0
    assert token_f1("the", "a") == 1.0  # both normalise to empty


def test_squad_scores_takes_best_reference():
    s = squad_scores(["Paris", "tower"], [["paris", "Paris, France"], "Eiffel Tower"])
    assert s["exact_match"] == pytest.approx(0.5)
    assert s["f1"] == pytest.approx((1.0 + 2 / 3) / 2)


# ------------------------------------------------------------------ calibration
def test_reliability_bins_and_ece_by_hand():
    # bin [0.5, 0.6): one prediction at 0.55, right -> gap 0.45; bin [0.6, 0.7): 0.65, right -> 0.35;
    # bin [0.9, 1.0]: 0.95 right, 0.95 wrong, 1.0 right -> confidence 2.9/3, accuracy 2/3, gap 0.3
    conf = [0.95, 0.95, 0.55, 0.65, 1.0]
    right = [True, False, True, True, True]
    bins = reliability_bins(conf, right)
    assert [(b["lower"], b["count"]) for b in bins] == [(0.5, 1), (0.6, 1), (0.9, 3)]
    assert bins[2]["confidence"] == pytest.approx(2.9 / 3) and bins[2]["accuracy"] == pytest.approx(2 / 3)
    assert expected_calibration_error(conf, right) == pytest.approx((0.45 + 0.35 + 3 * 0.3) / 5)


def test_ece_of_a_calibrated_and_an_overconfident_model():
    # 80%-confident predictions that are right 8 times in 10: calibrated
    assert expected_calibration_error([0.8] * 10, [True] * 8 + [False] * 2) == pytest.approx(0.0)
    # always 99% sure, right half the time: ECE 0.49
    assert expected_calibration_error([0.99] * 4, [True, False, True, False]) == pytest.approx(0.49)


def test_calibration_inputs_checked():
    with pytest.raises(ValueError, match="confidences must be probabilities in \\[0, 1\\], got \\[2.5\\]"):
        reliability_bins([2.5, 0.5], [True, True])
    with pytest.raises(ValueError, match="n_bins must be a positive int"):
        reliability_bins([0.5], [True], n_bins=0)
    with pytest.raises(ValueError, match="1 predictions but 2 references"):
        expected_calibration_error([0.5], [True, False])
