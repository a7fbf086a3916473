"""Chapter 6b: the student's initialisation, the three losses, the loop, int8 quantisation, bad input.

The student built from the real MiniLM is compared with ``transformers``' own MiniLM with the
dropped layers deleted; the losses with their formulas written out by hand; the loop on a tiny
model, where a few epochs must bring the student's outputs towards the teacher's.
"""
import math
import os

import pytest
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bertmini import data, fast, runtime  # noqa: E402
from bertmini.config import IGNORE_INDEX, BertConfig  # noqa: E402
from bertmini.distillation import (DistillationBatches, DistillationRecipe, TeacherTargets, check_student,  # noqa: E402
                                   distil, hard_label_loss, hidden_cosine_loss, quantize_int8, soft_target_loss,
                                   student_from_teacher, teacher_targets, time_inference)
from bertmini.finetuning import encode_classification, finetune, predict_logits  # noqa: E402
from bertmini.hf import load_pretrained, to_hf  # noqa: E402
from bertmini.padding import pad_rows  # noqa: E402
from bertmini.task_heads import BertForSequenceClassification  # noqa: E402
from bertmini.tokenization import BertTokenizer  # noqa: E402

torch.set_num_threads(1)
TINY = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=64)
SENTENCES = ["a gorgeous , witty , seductive movie .", "the plot is nothing but boilerplate clichés .",
             "it's not a bad film , just a forgettable one .", "an utterly charming and hilarious film that reminded "
             "me of the best of the marx brothers .", "dull .", "the acting is fine but the script is a mess ."]


@pytest.fixture(scope="module")
def tok():
    return BertTokenizer.from_vocab(data.minilm_vocab_path())


@pytest.fixture(scope="module")
def tiny_teacher():
    runtime.seed_everything(0)
    teacher = BertForSequenceClassification(BertConfig(**TINY), num_labels=2).eval()
    with torch.no_grad():
        teacher.classifier.weight.mul_(100)  # a teacher with opinions: logits a few units apart
    return teacher


def examples_of(tok, n=24, labelled=12):
    texts = [SENTENCES[i % len(SENTENCES)] + " " * (i // len(SENTENCES)) for i in range(n)]
    ex = encode_classification(tok, texts, [i % 2 for i in range(n)], num_labels=2, max_length=32)
    for e in ex[labelled:]:
        del e["labels"]  # the rest are unlabelled transfer sentences
    return ex


# ------------------------------------------------------------------ the student
def test_student_of_real_minilm_equals_transformers_with_layers_deleted(tok):
    runtime.seed_everything(0)
    teacher = BertForSequenceClassification.from_encoder(load_pretrained(data.minilm_path()), num_labels=2).eval()
    student = student_from_teacher(teacher, (0, 2, 4))
    assert student.config.num_hidden_layers == 3 and teacher.config.num_hidden_layers == 6
    theirs = to_hf(teacher.bert).eval()
    theirs.encoder.layer = torch.nn.ModuleList(theirs.encoder.layer[i] for i in (0, 2, 4))
    batch = encode_classification(tok, SENTENCES, max_length=64)
    from bertmini.finetuning import collate

    b = collate(batch)
    with torch.no_grad():
        ours = student.bert(**{k: b[k] for k in ("input_ids", "token_type_ids", "attention_mask")})
        ref = theirs(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"], attention_mask=b["attention_mask"])
    real = b["attention_mask"].bool()
    assert (ours.last_hidden_state - ref.last_hidden_state)[real].abs().max() < 1e-5
    assert (ours.pooler_output - ref.pooler_output).abs().max() < 1e-5
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    student.classifier.weight.data.add_(1.0)  # a copy: training the student leaves the teacher alone
    assert not torch.equal(student.classifier.weight, teacher.classifier.weight)


@pytest.mark.parametrize("layers,match", [
    ((0, 2, 6), r"names teacher layer\(s\) \[6\], but the teacher has 4 layers, numbered 0 to 3"),
    ((-1,), r"layer\(s\) \[-1\]"),
    ((), "layers is empty"),
])
def test_layer_map_outside_the_teacher_named(tiny_teacher, layers, match):
    with pytest.raises(ValueError, match=match):
        student_from_teacher(tiny_teacher, layers)


# ------------------------------------------------------------------ the losses
def test_soft_target_loss_is_t_squared_kl_by_hand():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    for temp in (1.0, 2.0, 4.0):
        p, q = (t / temp).softmax(-1), (s / temp).softmax(-1)
        by_hand = (p * (p.log() - q.log())).sum(-1).mean() * temp ** 2
        assert soft_target_loss(s, t, temp).item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert soft_target_loss(t, t, 2.0).item() == pytest.approx(0.0, abs=1e-6)


def test_t_squared_keeps_the_soft_gradient_the_same_size():
    """Without T^2 the gradient shrinks like 1/T^2; with it, it settles as T grows (Hinton et al.)."""
    g = torch.Generator().manual_seed(1)
    t = torch.randn(64, 2, generator=g) * 3
    s0 = torch.randn(64, 2, generator=g)

    def grad_norm(temp, scaled):
        s = s0.clone().requires_grad_()
        loss = soft_target_loss(s, t, temp) / (1 if scaled else temp ** 2)
        loss.backward()
        return s.grad.norm().item()

    assert grad_norm(8.0, False) / grad_norm(16.0, False) > 3.5          # about 4 = (16 / 8)^2
    assert grad_norm(8.0, True) / grad_norm(16.0, True) == pytest.approx(1.0, abs=0.1)


def test_hard_label_loss_skips_unlabelled_rows():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [5.0, -5.0]])
    labels = torch.tensor([1, IGNORE_INDEX, 0])
    expected = F.cross_entropy(logits[[0, 2]], labels[[0, 2]])
    assert hard_label_loss(logits, labels).item() == pytest.approx(expected.item())
    none = hard_label_loss(logits, torch.full((3,), IGNORE_INDEX))
    assert none.item() == 0.0  # a batch of unlabelled sentences: no label loss, and not NaN


def test_hidden_cosine_loss_over_real_tokens_only():
    g = torch.Generator().manual_seed(2)
    h = torch.randn(2, 4, 6, generator=g)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    assert hidden_cosine_loss(h, h, mask).item() == pytest.approx(0.0, abs=1e-6)
    other = h.clone()
    other[1, 2:] = -h[1, 2:]  # opposite directions, but at padding positions
    assert hidden_cosine_loss(h, other, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert hidden_cosine_loss(h, -h, mask).item() == pytest.approx(2.0)  # 1 - cos = 2 everywhere
    assert hidden_cosine_loss(h, 3 * h, mask).item() == pytest.approx(0.0, abs=1e-6)  # length does not count


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf")])
def test_temperature_must_be_positive(value):
    with pytest.raises(ValueError, match=rf"temperature={value!r} must be a positive number"):
        DistillationRecipe(temperature=value)


def test_recipe_with_nothing_to_learn_refused():
    with pytest.raises(ValueError, match="every loss weight is 0"):
        DistillationRecipe(alpha_soft=0, alpha_hard=0, alpha_cos=0)
    with pytest.raises(ValueError, match="loss weights must be numbers >= 0"):
        DistillationRecipe(alpha_cos=-1)


# ------------------------------------------------------------------ teacher outputs, batches, the loop
def test_teacher_targets_are_the_teachers_outputs(tok, tiny_teacher):
    ex = examples_of(tok)
    targets = teacher_targets(tiny_teacher, ex, batch_size=5, progress=False)
    expected = predict_logits(tiny_teacher, ex[:12]) + predict_logits(tiny_teacher, ex[12:])  # labelled, unlabelled
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(targets.logits, expected))
    assert [h.shape[0] for h in targets.hidden] == [len(e["input_ids"]) for e in ex]
    with torch.no_grad():
        alone = tiny_teacher.bert(torch.tensor([ex[3]["input_ids"]])).last_hidden_state[0]
    assert (targets.hidden[3].float() - alone).abs().max() < 1e-2  # stored in float16


def test_distillation_batches_carry_the_teacher(tok, tiny_teacher):
    ex = examples_of(tok)
    targets = teacher_targets(tiny_teacher, ex, progress=False)
    runtime.seed_everything(0)
    batch = next(iter(DistillationBatches(ex, targets, batch_size=8)))
    b, seq = batch["input_ids"].shape
    assert batch["teacher_logits"].shape == (b, 2) and batch["teacher_hidden"].shape == (b, seq, 32)
    padded = batch["attention_mask"] == 0
    assert padded.any() and (batch["teacher_hidden"][padded] == 0).all()
    assert set(batch["labels"].tolist()) <= {0, 1, IGNORE_INDEX}
    # the batch is shuffled: each row carries its own example's teacher outputs
    for row, ids in enumerate(batch["input_ids"].tolist()):
        i = next(i for i, e in enumerate(ex) if ids[:len(e["input_ids"])] == e["input_ids"])
        assert torch.equal(batch["teacher_logits"][row], targets.logits[i])
        n = len(ex[i]["input_ids"])
        assert torch.equal(batch["teacher_hidden"][row, :n], targets.hidden[i].float())
    with pytest.raises(ValueError, match="24 examples but teacher outputs for 23"):
        DistillationBatches(ex, TeacherTargets(targets.logits[:-1], targets.hidden[:-1], 30522, 32), 8)


def test_distil_brings_the_student_towards_the_teacher(tok, tiny_teacher):
    ex = examples_of(tok)
    targets = teacher_targets(tiny_teacher, ex, progress=False)
    before = {k: v.clone() for k, v in tiny_teacher.state_dict().items()}
    runtime.seed_everything(1)
    student = BertForSequenceClassification(BertConfig(**{**TINY, "num_hidden_layers": 1}), num_labels=2)
    recipe = DistillationRecipe(lr=3e-3, epochs=8, batch_size=8, alpha_hard=0.1)
    history = distil(student, ex, targets, recipe, progress=False)
    first, last = history.records[0], history.records[-1]
    assert {"soft_loss", "hard_loss", "cos_loss"} <= set(first)
    assert last["soft_loss"] < 0.5 * first["soft_loss"] and last["cos_loss"] < first["cos_loss"]
    assert all(torch.equal(v, tiny_teacher.state_dict()[k]) for k, v in before.items())  # the teacher never moves
    assert not student.training


def test_student_that_cannot_learn_from_the_teacher_named(tok, tiny_teacher):
    targets = teacher_targets(tiny_teacher, examples_of(tok, n=4), progress=False)
    runtime.seed_everything(0)
    other_vocab = BertForSequenceClassification(BertConfig(**{**TINY, "vocab_size": 8000}), num_labels=2)
    with pytest.raises(ValueError, match="the teacher's vocabulary has 30522 pieces, the student's 8000"):
        check_student(other_vocab, targets, DistillationRecipe())
    narrow = BertForSequenceClassification(BertConfig(**{**TINY, "hidden_size": 16}), num_labels=2)
    with pytest.raises(ValueError, match="the student is 16 wide and the teacher 32; set alpha_cos=0"):
        check_student(narrow, targets, DistillationRecipe())
    check_student(narrow, targets, DistillationRecipe(alpha_cos=0))  # soft targets need no common width


def test_finetune_takes_batches_of_its_micro_batch_size_only(tok, tiny_teacher):
    ex = examples_of(tok)
    targets = teacher_targets(tiny_teacher, ex, progress=False)
    with pytest.raises(ValueError, match="the Batches given hold 8 examples each; finetune needs micro-batches of 4"):
        finetune(tiny_teacher, DistillationBatches(ex, targets, 8), lr=1e-3, batch_size=8, micro_batch_size=4)


def test_pad_rows_pads_vectors_per_token():
    rows = [torch.ones(3, 2), torch.full((1, 2), 2.0)]
    out = pad_rows(rows, 0.0, dtype=torch.float32)
    assert out.shape == (2, 3, 2) and out.dtype == torch.float32
    assert out[1].tolist() == [[2.0, 2.0], [0.0, 0.0], [0.0, 0.0]]
    assert pad_rows([[1, 2], [3]], 0).tolist() == [[1, 2], [3, 0]]  # ids as before


# ------------------------------------------------------------------ int8 and speed
def test_quantize_int8_keeps_the_predictions_and_leaves_the_original(tok, tiny_teacher):
    ex = examples_of(tok, n=6)
    q = quantize_int8(tiny_teacher)
    assert type(tiny_teacher.classifier) is torch.nn.Linear  # the original keeps float weights
    int8 = torch.ao.nn.quantized.dynamic.Linear
    assert isinstance(q.classifier, int8) and isinstance(q.bert.encoder.layer[0].attention.self.query, int8)
    float_logits, int8_logits = (torch.stack(predict_logits(m, ex)) for m in (tiny_teacher, q))
    assert (float_logits - int8_logits).abs().max() < 0.05 * float_logits.abs().max() + 1e-3
    fast.ENABLED = False  # the fast attention path gives the plain path's numbers on int8 projections too
    try:
        plain = torch.stack(predict_logits(q, ex))
    finally:
        fast.ENABLED = True
    assert torch.allclose(plain, int8_logits, atol=1e-5)


def test_time_inference_times_every_model(tok, tiny_teacher):
    ex = examples_of(tok, n=8)
    times = time_inference({"teacher": tiny_teacher, "student": student_from_teacher(tiny_teacher, (1,))}, ex,
                           batch_size=4, repeats=2)
    assert set(times) == {"teacher", "student"} and all(0 < t < 1 and math.isfinite(t) for t in times.values())
