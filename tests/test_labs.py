"""The lab checkers (bertmini.labs): correct implementations of several shapes pass, the usual mistakes
fail with a message that names the case, the expected value, what came back and the right hint."""
from __future__ import annotations

import functools
import math
import os
import random

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
import torch.nn.functional as F

from bertmini import labs
from bertmini.attention import scaled_dot_product_attention
from bertmini.config import BertConfig
from bertmini.finetuning import align_labels
from bertmini.masking import mask_tokens
from bertmini.model import BertLayer
from bertmini.qa import best_span

# ----------------------------------------------------------------------------- lab 1


def score_plain(c_ab, c_a, c_b):
    return c_ab / (c_a * c_b)


def score_logs(c_ab, c_a, c_b):
    return math.exp(math.log(c_ab) - math.log(c_a) - math.log(c_b))


def wordpiece_recursive(word, vocab, first=True, backtrack=False):
    """Another shape of the same search; ``backtrack=True`` is the usual mistake: when the rest of the
    word cannot be covered, it tries a shorter first piece, as a linguist might."""
    if len(word) > 100:
        return ["[UNK]"]
    if not word:
        return []
    for end in range(len(word), 0, -1):
        piece = word[:end] if first else "##" + word[:end]
        if piece in vocab:
            rest = wordpiece_recursive(word[end:], vocab, False, backtrack)
            if rest != ["[UNK]"]:
                return [piece] + rest
            if not backtrack:
                return ["[UNK]"]
    return ["[UNK]"]


def wordpiece_scan_up(word, vocab):
    """Scans every end and keeps the last (longest) match: other loop order, same result."""
    if len(word) > 100:
        return ["[UNK]"]
    out, start = [], 0
    while start < len(word):
        prefix = "" if start == 0 else "##"
        match = None
        for end in range(start + 1, len(word) + 1):
            if prefix + word[start:end] in vocab:
                match = end
        if match is None:
            return ["[UNK]"]
        out.append(prefix + word[start:match])
        start = match
    return out


def wordpiece_mistake(longest=True, hashes=True, partial_unk=False, limit=True):
    """The greedy loop with one usual mistake switched on."""
    def fn(word, vocab):
        if limit and len(word) > 100:
            return ["[UNK]"]
        out, start = [], 0
        while start < len(word):
            ends = range(len(word), start, -1) if longest else range(start + 1, len(word) + 1)
            for end in ends:
                piece = word[start:end] if start == 0 or not hashes else "##" + word[start:end]
                if piece in vocab:
                    out.append(piece)
                    break
            else:
                if not partial_unk:
                    return ["[UNK]"]
                out.append("[UNK]")
                end = start + 1
            start = end
        return out
    return fn


wordpiece_for_else = wordpiece_mistake()  # no mistake switched on: BERT's loop, with for ... else


def wordpiece_ids(word, vocab):
    return [hash(p) for p in wordpiece_for_else(word, vocab)]


@pytest.mark.parametrize("fn", [score_plain, score_logs, lambda c_ab, c_a, c_b: torch.tensor(c_ab / c_a / c_b,
                                                                                               dtype=torch.float64)])
def test_merge_score_accepts(fn, capsys):
    labs.check_merge_score(fn)
    assert "check_merge_score: " in printed(capsys)


@pytest.mark.parametrize("fn, hint", [
    (lambda c_ab, c_a, c_b: c_ab // (c_a * c_b), "true division"),
    (lambda c_ab, c_a, c_b: c_ab / (c_a + c_b), "PRODUCT"),
    (lambda c_ab, c_a, c_b: c_ab, "BPE"),
    (lambda c_ab, c_a, c_b: c_a * c_b / c_ab, "upside down"),
    (lambda c_ab, c_a, c_b: "high", "return a number"),
])
def test_merge_score_rejects(fn, hint):
    expect_failure(labs.check_merge_score, fn, hint)


@pytest.mark.parametrize("fn", [wordpiece_for_else, wordpiece_recursive, wordpiece_scan_up])
def test_wordpiece_accepts(fn, capsys):
    labs.check_wordpiece(fn)
    assert "cases passed" in printed(capsys)


@pytest.mark.parametrize("fn, hint", [
    (wordpiece_mistake(longest=False), "LONGEST"),
    (wordpiece_mistake(hashes=False), "WITH the '##' prefix"),
    (wordpiece_mistake(partial_unk=True), "ONE ['[UNK]']"),
    (wordpiece_mistake(limit=False), "longer than 100"),
    (wordpiece_ids, "list of piece strings"),
])
def test_wordpiece_rejects(fn, hint):
    expect_failure(labs.check_wordpiece, fn, hint)


def test_wordpiece_backtracking_is_named():
    backtracking = functools.partial(wordpiece_recursive, backtrack=True)
    expect_failure(labs.check_wordpiece, backtracking, "does not backtrack")


# ----------------------------------------------------------------------------- lab 2


def select_rand(special, p, generator):
    return (torch.rand(special.shape, generator=generator) < p) & ~special.bool()


def select_bernoulli(special, p, generator):
    probs = torch.full(special.shape, float(p)).masked_fill(special.bool(), 0.0)
    return torch.bernoulli(probs, generator=generator).long()  # 0/1, not bool


def select_exact_share(special, p, generator):
    """Exactly round(p * n) positions per row, as Google's create_pretraining_data does."""
    out = torch.zeros(special.shape, dtype=torch.bool)
    for r in range(special.shape[0]):
        eligible = (~special[r].bool()).nonzero().flatten()
        k = round(p * len(eligible))
        out[r, eligible[torch.randperm(len(eligible), generator=generator)[:k]]] = True
    return out


def mask_two_uniforms(input_ids, *, mask_token_id, vocab_size, special_tokens_mask, mlm_probability, generator):
    selected = select_rand(special_tokens_mask, mlm_probability, generator)
    labels = torch.where(selected, input_ids, -100)
    u = torch.rand(input_ids.shape, generator=generator)
    inputs = input_ids.clone()
    inputs[selected & (u < 0.8)] = mask_token_id
    random_ = selected & (u >= 0.8) & (u < 0.9)
    inputs[random_] = torch.randint(vocab_size, (int(random_.sum()),), generator=generator)
    return inputs, labels


def mask_like_transformers(input_ids, *, mask_token_id, vocab_size, special_tokens_mask, mlm_probability,
                           generator):
    labels = input_ids.clone()
    probs = torch.full(labels.shape, mlm_probability).masked_fill(special_tokens_mask.bool(), 0.0)
    selected = torch.bernoulli(probs, generator=generator).bool()
    labels[~selected] = -100
    inputs = input_ids.clone()
    replaced = torch.bernoulli(torch.full(labels.shape, 0.8), generator=generator).bool() & selected
    inputs[replaced] = mask_token_id
    random_ = torch.bernoulli(torch.full(labels.shape, 0.5), generator=generator).bool() & selected & ~replaced
    inputs[random_] = torch.randint(vocab_size, labels.shape, generator=generator)[random_]
    return inputs, labels


@pytest.mark.parametrize("fn", [select_rand, select_bernoulli, select_exact_share])
def test_selection_accepts(fn, capsys):
    labs.check_selection(fn)
    assert "cases passed" in printed(capsys)


@pytest.mark.parametrize("fn, hint", [
    (lambda special, p, g: torch.rand(special.shape, generator=g) < p, "~special_tokens_mask"),
    (lambda special, p, g: (torch.rand(special.shape) < p) & ~special, "generator you are given"),
    (lambda special, p, g: (torch.rand(special.shape, generator=g) < 0.15) & ~special, "mlm_probability"),
    (lambda special, p, g: torch.rand(special.shape, generator=g) < p, "special"),
])
def test_selection_rejects(fn, hint):
    expect_failure(labs.check_selection, fn, hint)


@pytest.mark.parametrize("fn", [mask_two_uniforms, mask_like_transformers, mask_tokens])
def test_mask_tokens_accepts(fn, capsys):
    labs.check_mask_tokens(fn)
    out = printed(capsys)
    assert "cases passed" in out and "transformers' collator" in out


def mask_in_place(input_ids, **kw):
    inputs, labels = mask_two_uniforms(input_ids, **kw)
    input_ids.copy_(inputs)
    return inputs, labels


def mask_zero_labels(input_ids, **kw):
    inputs, labels = mask_two_uniforms(input_ids, **kw)
    return inputs, labels.clamp(min=0)


def mask_always(input_ids, *, mask_token_id, vocab_size, special_tokens_mask, mlm_probability, generator):
    selected = select_rand(special_tokens_mask, mlm_probability, generator)
    return input_ids.masked_fill(selected, mask_token_id), torch.where(selected, input_ids, -100)


def mask_two_draws(input_ids, *, mask_token_id, vocab_size, special_tokens_mask, mlm_probability, generator):
    """Two independent draws: [MASK] with 0.8, then random with 0.1 of the REST: 2% random, not 10%."""
    selected = select_rand(special_tokens_mask, mlm_probability, generator)
    inputs = input_ids.clone()
    masked = selected & (torch.rand(input_ids.shape, generator=generator) < 0.8)
    random_ = selected & ~masked & (torch.rand(input_ids.shape, generator=generator) < 0.1)
    inputs[masked] = mask_token_id
    inputs[random_] = torch.randint(vocab_size, input_ids.shape, generator=generator)[random_]
    return inputs, torch.where(selected, input_ids, -100)


def mask_specials_too(input_ids, *, special_tokens_mask, **kw):
    return mask_two_uniforms(input_ids, special_tokens_mask=torch.zeros_like(special_tokens_mask), **kw)


@pytest.mark.parametrize("fn, hint", [
    (mask_in_place, "input_ids.clone()"),
    (mask_zero_labels, "-100 (not 0)"),
    (mask_always, "80%"),
    (mask_two_draws, "ONE uniform number"),
    (mask_specials_too, "never select"),
    (lambda input_ids, **kw: mask_two_uniforms(input_ids, **kw)[0], "return inputs, labels"),
])
def test_mask_tokens_rejects(fn, hint):
    expect_failure(labs.check_mask_tokens, fn, hint)


# ----------------------------------------------------------------------------- lab 3


def attention_formula(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores + mask
    probs = scores.softmax(-1)
    return probs @ v, probs


def attention_einsum(query, key, value, mask=None):
    scores = torch.einsum("...qd,...kd->...qk", query, key) * query.shape[-1] ** -0.5
    weights = torch.softmax(scores if mask is None else scores + mask, dim=-1)
    return torch.einsum("...qk,...kd->...qd", weights, value)  # the output alone


def attention_fused(q, k, v, mask=None):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@pytest.mark.parametrize("fn", [attention_formula, attention_einsum, attention_fused,
                                lambda q, k, v, mask=None: scaled_dot_product_attention(q, k, v, mask)])
def test_attention_accepts(fn, capsys):
    labs.check_attention(fn)
    assert "cases passed" in printed(capsys)


def attention_bad(scale=True, dim=-1, use_mask=True, in_place=False):
    def fn(q, k, v, mask=None):
        if in_place:
            q /= math.sqrt(q.shape[-1])
            scores = q @ k.transpose(-2, -1)
        else:
            scores = q @ k.transpose(-2, -1) / (math.sqrt(q.shape[-1]) if scale is True else scale(q))
        if use_mask and mask is not None:
            scores = scores + mask
        return scores.softmax(dim) @ v
    return fn


@pytest.mark.parametrize("fn, hint", [
    (attention_bad(scale=lambda q: 1.0), "sqrt(d_k)"),
    (attention_bad(scale=lambda q: q.shape[-1]), "SQUARE ROOT"),
    (attention_bad(dim=-2), "LAST dimension"),
    (attention_bad(use_mask=False), "add the mask"),
    (attention_bad(in_place=True), "in-place"),
    (lambda q, k, v, mask=None: (q @ k.transpose(-2, -1)).softmax(-1), "weights @ value"),
])
def test_attention_rejects(fn, hint):
    expect_failure(labs.check_attention, fn, hint)


def layer_functional(x, w, num_heads, mask=None, act=F.gelu, ffn=True, heads_used=None, pre_ln=False):
    batch, seq, hidden = x.shape
    heads = heads_used or num_heads

    def split(t):
        return t.view(batch, seq, heads, hidden // heads).transpose(1, 2)

    def dense(t, name):
        return F.linear(t, w[f"{name}.weight"], w[f"{name}.bias"])

    def norm(t, name):
        return F.layer_norm(t, (hidden,), w[f"{name}.weight"], w[f"{name}.bias"], eps=1e-12)

    h = norm(x, "attention.output.LayerNorm") if pre_ln else x
    q, k, v = (split(dense(h, f"attention.self.{n}")) for n in ("query", "key", "value"))
    context = attention_formula(q, k, v, mask)[0].transpose(1, 2).reshape(batch, seq, hidden)
    a = norm(x + dense(context, "attention.output.dense"), "attention.output.LayerNorm")
    if not ffn:
        return a
    return norm(a + dense(act(dense(a, "intermediate.dense")), "output.dense"), "output.LayerNorm")


def layer_by_module(x, weights, num_heads, mask=None):
    """Another shape: build bertmini's own BertLayer and load the weights into it."""
    hidden, inner = x.shape[-1], weights["intermediate.dense.weight"].shape[0]
    layer = BertLayer(BertConfig(hidden_size=hidden, num_attention_heads=num_heads, intermediate_size=inner,
                                 vocab_size=2)).eval()
    layer.load_state_dict(weights)
    return layer(x, mask)[0]


@pytest.mark.parametrize("fn", [layer_functional, layer_by_module])
def test_encoder_layer_accepts(fn, capsys):
    labs.check_encoder_layer(fn)
    assert "MiniLM's six layers equal transformers' BertLayer" in printed(capsys)


@pytest.mark.parametrize("change, hint", [
    (dict(ffn=False), "feed-forward"),
    (dict(act=lambda t: F.gelu(t, approximate="tanh")), "exact one"),
    (dict(act=F.relu), "not ReLU"),
    (dict(heads_used=1), "split the hidden size"),
    (dict(pre_ln=True), "each sublayer in order"),
])
def test_encoder_layer_rejects(change, hint):
    expect_failure(labs.check_encoder_layer, lambda x, w, n, mask=None: layer_functional(x, w, n, mask, **change),
                   hint)


def test_encoder_layer_without_mask_is_named():
    expect_failure(labs.check_encoder_layer, lambda x, w, n, mask=None: layer_functional(x, w, n, None),
                   "use the mask")


# ----------------------------------------------------------------------------- lab 4


def mlm_gathered(sequence_output, labels, predictions):
    selected = labels != -100
    return F.cross_entropy(predictions(sequence_output[selected]), labels[selected])


def mlm_dense(sequence_output, labels, predictions):
    scores = predictions(sequence_output)
    return F.cross_entropy(scores.view(-1, scores.shape[-1]), labels.view(-1), ignore_index=-100)


def mlm_by_hand(sequence_output, labels, predictions):
    rows = predictions.transform(sequence_output[labels != -100])
    logp = F.linear(rows, predictions.decoder.weight, predictions.bias).log_softmax(-1)
    return -logp.gather(1, labels[labels != -100][:, None]).mean()


@pytest.mark.parametrize("fn", [mlm_gathered, mlm_dense, mlm_by_hand])
def test_mlm_loss_accepts(fn, capsys):
    labs.check_mlm_loss(fn)
    assert "cases passed" in printed(capsys)


@pytest.mark.parametrize("fn, hint", [
    (lambda h, y, p: F.cross_entropy(p(h[y != -100]), y[y != -100], reduction="sum"), "not the sum"),
    (lambda h, y, p: F.cross_entropy(p(h[y != -100]), y[y != -100], reduction="sum") / y.numel(), "MASKED"),
    (lambda h, y, p: F.cross_entropy(F.linear(h[y != -100], p.decoder.weight, p.bias), y[y != -100]), "transform"),
    (lambda h, y, p: F.cross_entropy(p(h[y != -100]).softmax(-1), y[y != -100]), "raw scores"),
    (lambda h, y, p: mlm_gathered(h, y, p).item(), "carries gradients"),
])
def test_mlm_loss_rejects(fn, hint):
    expect_failure(labs.check_mlm_loss, fn, hint)


def nsp_pick_article(docs, rng):
    pairs, usable = [], [k for k, d in enumerate(docs) if d]
    for a, doc in enumerate(docs):
        for i in range(len(doc) - 1):
            if rng.random() < 0.5:
                other = rng.choice([k for k in usable if k != a])
                pairs.append((doc[i], rng.choice(docs[other]), 1))
            else:
                pairs.append((doc[i], doc[i + 1], 0))
    return pairs


def nsp_pick_sentence(docs, rng):
    """Another shape: the random B drawn from all sentences of the other articles; pairs come out shuffled."""
    everything = [(a, s) for a, doc in enumerate(docs) for s in doc]
    pairs = []
    for a, doc in enumerate(docs):
        for first, second in zip(doc, doc[1:]):
            if rng.random() >= 0.5:
                pairs.append((list(first), list(second), 0))
                continue
            other, sentence = rng.choice(everything)
            while other == a:
                other, sentence = rng.choice(everything)
            pairs.append((list(first), list(sentence), 1))
    rng.shuffle(pairs)
    return pairs


@pytest.mark.parametrize("fn", [nsp_pick_article, nsp_pick_sentence])
def test_nsp_pairs_accepts(fn, capsys):
    labs.check_nsp_pairs(fn)
    assert "NotNext" in printed(capsys)


def nsp_any_article(docs, rng):
    pairs, usable = [], [k for k, d in enumerate(docs) if d]
    for a, doc in enumerate(docs):
        for i in range(len(doc) - 1):
            label = int(rng.random() < 0.5)
            pairs.append((doc[i], rng.choice(docs[rng.choice(usable)]) if label else doc[i + 1], label))
    return pairs


def nsp_global_random(docs, rng):
    return nsp_pick_article(docs, random.Random(random.random()))


def nsp_empty_articles(docs, rng):
    pairs = []
    for a, doc in enumerate(docs):
        for i in range(len(doc) - 1):
            if rng.random() < 0.5:
                other = rng.choice([k for k in range(len(docs)) if k != a])
                pairs.append((doc[i], rng.choice(docs[other]), 1))
            else:
                pairs.append((doc[i], doc[i + 1], 0))
    return pairs


@pytest.mark.parametrize("fn, hint", [
    (nsp_any_article, "ANOTHER article"),
    (lambda docs, rng: [(d[i], d[i + 1], 0) for d in docs for i in range(len(d) - 1)], "fair coin"),
    (nsp_global_random, "rng you are given"),
    (nsp_empty_articles, "raised IndexError"),
    (lambda docs, rng: [(d[i], d[i + 1], 0) for d in docs for i in range(len(d))], "raised IndexError"),
    (lambda docs, rng: [(d.pop(0), d[0], 0) for d in docs if len(d) > 1], "docs unchanged"),
])
def test_nsp_pairs_rejects(fn, hint):
    expect_failure(labs.check_nsp_pairs, fn, hint)


# ----------------------------------------------------------------------------- lab 5


def align_loop(word_ids, word_labels):
    out, previous = [], None
    for w in word_ids:
        out.append(-100 if w is None or w == previous else word_labels[w])
        previous = w
    return out


def align_comprehension(word_ids, word_labels):
    before = [None] + list(word_ids[:-1])
    return torch.tensor([-100 if w is None or w == b else word_labels[w] for w, b in zip(word_ids, before)],
                        dtype=torch.long)


@pytest.mark.parametrize("fn", [align_loop, align_comprehension, align_labels])
def test_align_labels_accepts(fn, capsys):
    labs.check_align_labels(fn)
    assert "cases passed" in printed(capsys)


@pytest.mark.parametrize("fn, hint", [
    (lambda ids, labels: [-100 if w is None else labels[w] for w in ids], "FIRST sub-token of each word"),
    (lambda ids, labels: [-100 if w is None or (i + 1 < len(ids) and ids[i + 1] == w) else labels[w]
                          for i, w in enumerate(ids)], "not the last"),
    (lambda ids, labels: [x for x in align_loop(ids, labels) if x != -100], "one label per token"),
    (lambda ids, labels: [0 if x == -100 else x for x in align_loop(ids, labels)], "walk through word_ids"),
])
def test_align_labels_rejects(fn, hint):
    expect_failure(labs.check_align_labels, fn, hint)


def span_loops(start, end, allowed, max_len):
    best = (-1, -1, float("-inf"))
    for i in range(len(start)):
        for j in range(i, min(len(start), i + max_len)):
            if allowed[i] and allowed[j] and float(start[i] + end[j]) > best[2]:
                best = (i, j, float(start[i] + end[j]))
    return best


def span_matrix(start, end, allowed, max_len):
    n = len(start)
    scores = start[:, None] + end[None, :]
    ok = torch.ones(n, n, dtype=torch.bool).triu() & ~torch.ones(n, n, dtype=torch.bool).triu(max_len)
    ok &= allowed[:, None] & allowed[None, :]
    if not ok.any():
        return -1, -1, float("-inf")
    flat = scores.masked_fill(~ok, float("-inf")).flatten().argmax()
    return flat // n, flat % n, scores.flatten()[flat]  # tensors, not ints


@pytest.mark.parametrize("fn", [span_loops, span_matrix, best_span])
def test_best_span_accepts(fn, capsys):
    labs.check_best_span(fn)
    assert "transformers' span decoder picks the same span" in printed(capsys)


def span_separately(start, end, allowed, max_len):
    s, e = start.masked_fill(~allowed, -1e9), end.masked_fill(~allowed, -1e9)
    if not allowed.any():
        return -1, -1, float("-inf")
    i, j = int(s.argmax()), int(e.argmax())
    return i, j, float(start[i] + end[j])


@pytest.mark.parametrize("fn, hint", [
    (span_separately, "i <= j"),
    (lambda s, e, a, n: span_loops(s, e, a, 10**6), "too long"),
    (lambda s, e, a, n: span_loops(s, e, torch.ones_like(a), n), "allowed positions"),
    (lambda s, e, a, n: span_loops(s, e, a, n) if a.any() else (0, 0, 0.0), "no position is allowed"),
    (lambda s, e, a, n: span_loops(s, e, a, n)[:2], "(i, j, score)"),
])
def test_best_span_rejects(fn, hint):
    expect_failure(labs.check_best_span, fn, hint)


# ----------------------------------------------------------------------------- lab 6


def sample_multinomial(input_ids, labels, generator_logits):
    out = input_ids.clone()
    out[labels != -100] = torch.multinomial(generator_logits.softmax(-1), 1).squeeze(-1)
    return out


def sample_gumbel(input_ids, labels, generator_logits):
    """The ELECTRA code's Gumbel-max trick: the same distribution."""
    noise = -torch.log(-torch.log(torch.rand_like(generator_logits).clamp(1e-9, 1 - 1e-9)))
    return input_ids.masked_scatter(labels != -100, (generator_logits + noise).argmax(-1))


def sample_categorical(input_ids, labels, generator_logits):
    out = input_ids.clone()
    if len(generator_logits):
        out[labels != -100] = torch.distributions.Categorical(logits=generator_logits).sample()
    return out


@pytest.mark.parametrize("fn", [sample_multinomial, sample_gumbel, sample_categorical])
def test_generator_sample_accepts(fn, capsys):
    labs.check_generator_sample(fn)
    assert "sampled shares" in printed(capsys)


def sample_in_place(input_ids, labels, generator_logits):
    input_ids[labels != -100] = torch.multinomial(generator_logits.softmax(-1), 1).squeeze(-1)
    return input_ids


def sample_column_major(input_ids, labels, generator_logits):
    out = input_ids.clone()
    out.T[(labels != -100).T] = torch.multinomial(generator_logits.softmax(-1), 1).squeeze(-1)
    return out


@pytest.mark.parametrize("fn, hint", [
    (lambda ids, labels, logits: ids.masked_scatter(labels != -100, logits.argmax(-1)), "argmax"),
    (sample_in_place, "input_ids.clone()"),
    (sample_column_major, "r-th masked position"),
])
def test_generator_sample_rejects(fn, hint):
    expect_failure(labs.check_generator_sample, fn, hint)


def replaced_where(input_ids, labels, corrupted_ids):
    return (corrupted_ids != torch.where(labels == -100, input_ids, labels)).long()


def replaced_cases(input_ids, labels, corrupted_ids):
    masked = labels != -100
    return (masked & (corrupted_ids != labels)) | (~masked & (corrupted_ids != input_ids))  # bool


@pytest.mark.parametrize("fn", [replaced_where, replaced_cases])
def test_replaced_labels_accepts(fn, capsys):
    labs.check_replaced_labels(fn)
    assert "cases passed" in printed(capsys)


@pytest.mark.parametrize("fn, hint", [
    (lambda ids, labels, corrupted: (corrupted != ids).long(), "ORIGINAL token"),
    (lambda ids, labels, corrupted: (labels != -100).long(), "CHANGED"),
])
def test_replaced_labels_rejects(fn, hint):
    expect_failure(labs.check_replaced_labels, fn, hint)


def disc_masked(logits, labels, attention_mask):
    real = torch.ones_like(labels, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    return F.binary_cross_entropy_with_logits(logits[real], labels[real].float())


def disc_weighted(logits, labels, attention_mask):
    weight = torch.ones_like(logits) if attention_mask is None else attention_mask.float()
    per_token = -(labels * F.logsigmoid(logits) + (1 - labels) * F.logsigmoid(-logits))
    return (per_token * weight).sum() / weight.sum()


@pytest.mark.parametrize("fn", [disc_masked, disc_weighted])
def test_discriminator_loss_accepts(fn, capsys):
    labs.check_discriminator_loss(fn)
    assert "cases passed" in printed(capsys)


@pytest.mark.parametrize("fn, hint", [
    (lambda z, y, m: F.binary_cross_entropy_with_logits(z, y.float()), "leave the padding out"),
    (lambda z, y, m: F.binary_cross_entropy_with_logits(z, y.float(), reduction="sum") if m is None else
     F.binary_cross_entropy_with_logits(z[m.bool()], y[m.bool()].float(), reduction="sum"), "MEAN"),
    (lambda z, y, m: disc_masked(z.sigmoid(), y, m), "raw scores"),
    (lambda z, y, m: F.binary_cross_entropy_with_logits(z, y), "float targets"),
])
def test_discriminator_loss_rejects(fn, hint):
    expect_failure(labs.check_discriminator_loss, fn, hint)


# ----------------------------------------------------------------------------- every checker


CHECKERS = [getattr(labs, name) for name in labs.__all__ if name.startswith("check_")]


@pytest.mark.parametrize("checker", CHECKERS, ids=lambda c: c.__name__)
def test_not_written_yet_passes_through(checker):
    """A lab's stub raises NotImplementedError with its hint: the learner must see exactly that."""
    def stub(*args, **kwargs):
        raise NotImplementedError("write the loop first")
    with pytest.raises(NotImplementedError, match="write the loop first"):
        checker(stub)


@pytest.mark.parametrize("checker", CHECKERS, ids=lambda c: c.__name__)
def test_a_called_function_is_refused_with_the_fix(checker):
    with pytest.raises(TypeError, match="drop the parentheses"):
        checker([1, 2, 3])


def printed(capsys) -> str:
    """What the checker printed, lines joined (its detail wraps to fit the page)."""
    return " ".join(capsys.readouterr().out.split())


def expect_failure(checker, fn, hint: str) -> None:
    """``checker(fn)`` fails with a message a learner can act on: the case, expected, got, the hint."""
    with pytest.raises(labs.LabCheckError) as info:
        checker(fn)
    message = str(info.value)
    lines = message.splitlines()
    assert lines[0].startswith(f"{checker.__name__} failed on case "), message
    assert [line.split(":")[0].strip() for line in lines[1:4]] == ["expected", "got", "hint"], message
    assert hint in message, f"hint {hint!r} not in:\n{message}"
