"""Metrics of chapter 5, checked against cases worked out by hand.

The entity-level cases follow conlleval (the CoNLL shared-task script that seqeval
reproduces): an ``I-X`` that does not continue an ``X`` entity starts a new one.
The SQuAD cases follow the official v1.1 evaluation script's normalisation.
"""
import pytest

from bertmini.metrics import (accuracy, bio_entities, bootstrap_interval, entity_scores, exact_match,
                              expected_calibration_error, macro_f1, noise_verdict, normalize_answer,
                              reliability_bins, squad_scores, token_f1)


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


def mean(values):
    return sum(values) / len(values)


def test_bootstrap_interval_by_hand():
    # Two examples scoring 0 and 1: a resample's mean is 0, 1/2 or 1 with chances 1/4, 1/2, 1/4.
    # The middle 40% (quantiles 0.3 and 0.7) lies inside the mass at 1/2; the middle 90%
    # (quantiles 0.05 and 0.95) reaches both ends.
    assert bootstrap_interval(mean, [0, 1], resamples=4000, level=0.4) == (0.5, 0.5)
    assert bootstrap_interval(mean, [0, 1], resamples=4000, level=0.9) == (0.0, 1.0)
    # one example, or two models that agree everywhere: no spread at all
    assert bootstrap_interval(mean, [0.7]) == (0.7, 0.7)
    same = [1, 0, 1, 1, 0]
    assert bootstrap_interval(lambda a, b: mean(a) - mean(b), same, same) == (0.0, 0.0)


def test_noise_verdict_reads_whether_the_interval_holds_zero():
    assert noise_verdict(-1.2, 3.4) == "within the noise"
    assert noise_verdict(0.0, 3.4) == "within the noise"   # 0 at an end: still a tie
    assert noise_verdict(-2.0, 0.0) == "within the noise"
    assert noise_verdict(0.1, 3.4) == "beyond the noise"
    assert noise_verdict(-3.4, -0.1) == "beyond the noise"
    with pytest.raises(ValueError, match="low=2.0 is above high=1.0"):
        noise_verdict(2.0, 1.0)


def test_bootstrap_interval_takes_numpys_quantiles():
    # A score that ignores its draw and counts 9, 8, ..., 0: the interval is the 10% and 90%
    # quantiles of 0..9, interpolated linearly as numpy.percentile does (0.9 and 8.1).
    import numpy as np

    counter = iter(range(9, -1, -1))
    low, high = bootstrap_interval(lambda column: next(counter), [0], resamples=10, level=0.8)
    assert (low, high) == pytest.approx(tuple(np.percentile(np.arange(10), [10, 90])))
    assert (low, high) == pytest.approx((0.9, 8.1))


def test_bootstrap_interval_matches_the_normal_approximation():
    # 400 examples, half right: standard error sqrt(0.25 / 400) = 0.025, 95% interval 0.5 +- 0.049
    low, high = bootstrap_interval(mean, [1, 0] * 200, resamples=2000)
    assert low == pytest.approx(0.5 - 1.96 * 0.025, abs=0.01)
    assert high == pytest.approx(0.5 + 1.96 * 0.025, abs=0.01)


def test_bootstrap_interval_resamples_the_columns_in_pairs():
    # Model a is right wherever b is, and on 10 more of 100 examples: on any resample a scores
    # at least as well as b, so the interval of the difference cannot go below 0 (resampled
    # independently, it would: the two accuracies' spread is about 7 points each).
    gold = [1] * 100
    a, b = [1] * 60 + [0] * 40, [1] * 50 + [0] * 50
    low, high = bootstrap_interval(lambda a, b, g: accuracy(a, g) - accuracy(b, g), a, b, gold)
    assert 0 <= low < 0.1 < high < 0.2
    assert bootstrap_interval(mean, a, seed=3) == bootstrap_interval(mean, a, seed=3)  # seeded


@pytest.mark.parametrize("args, kwargs, message", [
    ((), {}, "no columns"),
    (([1, 0], [1]), {}, "lengths"),
    (([],), {}, "empty"),
    (([1, 0],), {"level": 95}, "level"),
    (([1, 0],), {"resamples": 0}, "resamples"),
])
def test_bootstrap_interval_rejects_bad_input(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        bootstrap_interval(mean, *args, **kwargs)


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
