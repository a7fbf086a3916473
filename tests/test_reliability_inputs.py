"""Bad inputs, refused where they come in (issue 14, item 12, a-l).

Each of these was silent (a NaN model, a wrong label, a text read one character at a time)
or failed deep inside torch or the standard library. Now each fails at the public entry
point with an error that names the argument, the bad value and the fix; the tests check
the error type and a key phrase of the message.
"""
from __future__ import annotations

import pytest
import torch

from bertmini.config import BertConfig
from bertmini.finetuning import FineTunedClassifier, encode_classification, encode_ner, finetune
from bertmini.heads import BertForPreTraining
from bertmini.hf import from_hf
from bertmini.masking import MLMCollator, mask_tokens, whole_word_mask
from bertmini.model import BertModel
from bertmini.padding import pad_rows
from bertmini.task_heads import BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification
from test_finetuning import tiny_config, tok  # noqa: F401  (tok: the real-vocabulary tokenizer fixture)

torch.set_num_threads(1)
IDS = torch.tensor([[101, 7592, 2088, 102]])  # [CLS] hello world [SEP]


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    return BertForSequenceClassification(tiny_config(), num_labels=2).eval()


# a. non-finite or non-positive float hyperparameters
@pytest.mark.parametrize("field, value", [("layer_norm_eps", float("nan")), ("layer_norm_eps", float("inf")),
                                          ("initializer_range", float("inf")), ("initializer_range", float("nan")),
                                          ("initializer_range", -0.02)])
def test_a_config_refuses_non_finite_floats(field, value):
    with pytest.raises(ValueError, match=f"BertConfig.{field} must be a positive finite number"):
        tiny_config(**{field: value})


# b. label names that do not match the model's outputs
def test_b_classifier_label_names_must_match_outputs(classifier, tok):
    with pytest.raises(ValueError, match=r"3 label name\(s\) for a model with 2 outputs"):
        FineTunedClassifier(classifier, tok, ["neg", "neutral", "pos"])


# c. float ids to decode, negative ids to convert_ids_to_tokens
def test_c_tokenizer_refuses_float_and_negative_ids(tok):
    with pytest.raises(TypeError, match="token ids must be integers, got 2.7"):
        tok.decode([101, 2.7, 102])
    with pytest.raises(TypeError, match="token ids must be integers"):
        tok.decode(torch.tensor([1000.0, 2000.0]))
    with pytest.raises(ValueError, match="id -1 is outside the vocabulary"):
        tok.convert_ids_to_tokens([-1])
    with pytest.raises(ValueError, match="id -5 is outside the vocabulary"):
        tok.convert_ids_to_tokens(torch.tensor([101, -5]))


# d. a vocab_size that does not cover [MASK] or the batch's ids
@pytest.mark.parametrize("masker", [mask_tokens, whole_word_mask])
def test_d_masking_needs_a_vocab_size_covering_the_ids(masker):
    special = torch.tensor([[True, False, False, True]])
    kw = dict(special_tokens_mask=special, mlm_probability=1.0)
    if masker is whole_word_mask:
        kw["word_ids"] = torch.tensor([[-1, 0, 1, -1]])
    with pytest.raises(ValueError, match="mask_token_id=103 is not an id of a vocabulary of vocab_size=100"):
        masker(IDS, mask_token_id=103, vocab_size=100, **kw)
    with pytest.raises(ValueError, match="input_ids holds id 7592, outside vocab_size=1000"):
        masker(IDS, mask_token_id=103, vocab_size=1000, **kw)


# e. labels: any integer dtype is converted to long, a float is refused, in every head
def test_e_heads_take_int32_labels_and_refuse_float_labels(classifier):
    torch.manual_seed(0)
    token = BertForTokenClassification(tiny_config(), num_labels=3).eval()
    qa = BertForQuestionAnswering(tiny_config()).eval()
    tags = torch.tensor([[-100, 1, 2, -100]])
    assert torch.equal(classifier(IDS, labels=torch.tensor([1], dtype=torch.int32)).loss,
                       classifier(IDS, labels=torch.tensor([1])).loss)
    assert torch.equal(token(IDS, labels=tags.int()).loss, token(IDS, labels=tags).loss)
    assert torch.equal(qa(IDS, start_positions=torch.tensor([1], dtype=torch.int32),
                          end_positions=torch.tensor([2], dtype=torch.int32)).loss,
                       qa(IDS, start_positions=torch.tensor([1]), end_positions=torch.tensor([2])).loss)
    with pytest.raises(TypeError, match="labels must hold integer class indices, got dtype torch.float32"):
        classifier(IDS, labels=torch.tensor([1.0]))
    with pytest.raises(TypeError, match="labels must hold integer class indices"):
        token(IDS, labels=tags.float())
    with pytest.raises(TypeError, match="start_positions must hold integer class indices"):
        qa(IDS, start_positions=torch.tensor([1.0]), end_positions=torch.tensor([2.0]))
    with pytest.raises(TypeError, match="next_sentence_label must hold integer class indices"):
        BertForPreTraining(tiny_config()).eval()(IDS, next_sentence_label=torch.tensor([0.5]))


# f. a batch size of 0
def test_f_finetune_refuses_batch_size_zero(classifier, tok):
    examples = encode_classification(tok, ["good", "bad"], [1, 0])
    with pytest.raises(ValueError, match="batch_size must be a positive int.*got 0"):
        finetune(classifier, examples, lr=1e-4, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="micro_batch_size must be a positive int.*got 0"):
        finetune(classifier, examples, lr=1e-4, batch_size=2, micro_batch_size=0, progress=False)


# g. a negative pad_to_multiple_of, refused where it is given
def test_g_negative_pad_to_multiple_of(tok):
    with pytest.raises(ValueError, match="pad_to_multiple_of must be a positive int .* got -8"):
        MLMCollator(tok, pad_to_multiple_of=-8)
    with pytest.raises(ValueError, match="pad_to_multiple_of must be a positive int .* got -8"):
        pad_rows([[1, 2, 3]], 0, multiple_of=-8)


# h. string labels, and one string where a list of texts is expected
def test_h_string_labels_and_a_single_string(tok):
    with pytest.raises(TypeError, match="label 0 is 'pos' \\(str\\), not a class index"):
        encode_classification(tok, ["good", "bad"], ["pos", "neg"])
    with pytest.raises(TypeError, match="encode_classification expects a list of texts, got one string"):
        encode_classification(tok, "a good film", [1])
    with pytest.raises(TypeError, match="pairs= expects a list of texts, got one string"):
        encode_classification(tok, ["a", "b"], pairs="xy")
    with pytest.raises(TypeError, match="encode_ner expects a list of sentences"):
        encode_ner(tok, "hello world", label_list=["O"])
    with pytest.raises(TypeError, match="sentence 0 is one string"):
        encode_ner(tok, ["hello world"], label_list=["O"])


# i. a tag on a word that has no tokens
def test_i_ner_tag_on_an_empty_word(tok):
    with pytest.raises(ValueError, match=r"sentence 0, word 1 \('\\u200b'\) has no tokens.*'B-PER' would be lost"):
        encode_ner(tok, [["hello", "\u200b", "world"]], [["O", "B-PER", "O"]], label_list=["O", "B-PER"])
    with pytest.raises(ValueError, match="sentence 1, word 2 \\(''\\) has no tokens"):
        encode_ner(tok, [["a"], ["hello", "world", ""]], [["O"], ["O", "O", "O"]], label_list=["O"])


# j. a state dict where a model is expected
def test_j_from_hf_given_a_state_dict():
    state = BertModel(tiny_config()).state_dict()
    with pytest.raises(TypeError, match="got a state dict; pass the model itself"):
        from_hf(state)


# k. an empty batch
@pytest.mark.parametrize("shape", [(0, 4), (2, 0)])
def test_k_empty_batch(shape):
    model = BertModel(tiny_config()).eval()
    with pytest.raises(ValueError, match=r"input_ids is empty \(shape"):
        model(torch.zeros(shape, dtype=torch.long))


# l. predict(None)
def test_l_predict_none(classifier, tok):
    clf = FineTunedClassifier(classifier, tok, ["neg", "pos"])
    with pytest.raises(TypeError, match="predict expects a list of texts, got None"):
        clf.predict(None)
    assert [p.label in ("neg", "pos") for p in clf.predict(["a good film"])] == [True]
