"""bertmini.masking measured on real Wikipedia text with the real bert-base-uncased vocab,
and compared with transformers' DataCollatorForLanguageModeling on the same batches."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from torch.utils.data import DataLoader

from bertmini import data
from bertmini.masking import (
    IGNORE_INDEX,
    MLMCollator,
    mask_tokens,
    whole_word_mask,
    word_ids_from_wordpieces,
)

transformers = pytest.importorskip("transformers")

MIN_TOKENS = 200_000
MAX_LEN = 128


@pytest.fixture(scope="module")
def tokenizer():
    tok = transformers.BertTokenizerFast(vocab=str(data.minilm_vocab_path()), do_lower_case=True)
    assert len(tok) == 30522  # the real vocabulary, not a silently shrunken one
    return tok


@pytest.fixture(scope="module")
def encodings(tokenizer):
    """Real article lead sections, truncated to 128 pieces, until >= 200,000 maskable tokens."""
    texts, total = [], 0
    for art in data.wiki_articles("train"):
        texts.append(art.text)
        total += len(art.text.split())
        if total > 1.1 * MIN_TOKENS:  # words undercount pieces; checked below
            break
    enc = tokenizer(texts, truncation=True, max_length=MAX_LEN, return_offsets_mapping=True,
                    return_special_tokens_mask=True)
    n = sum(len(x) - sum(s) for x, s in zip(enc["input_ids"], enc["special_tokens_mask"]))
    assert n >= MIN_TOKENS, f"only {n} maskable tokens"
    return enc


@pytest.fixture(scope="module")
def examples(encodings):
    return [{"input_ids": ids, "idx": i} for i, ids in enumerate(encodings["input_ids"])]


def collate_all(collator, examples, batch_size=64):
    return [collator(examples[i : i + batch_size]) for i in range(0, len(examples), batch_size)]


def stats(batches, mask_token_id, key="input_ids"):
    """Selected fraction among maskable positions and the 80/10/10 split, over many batches."""
    eligible = selected = masked = kept = 0
    for b, orig in batches:
        sel = b["labels"] != IGNORE_INDEX
        eligible += int(orig["maskable"].sum())
        selected += int(sel.sum())
        masked += int((sel & (b[key] == mask_token_id)).sum())
        kept += int((sel & (b[key] == orig["input_ids"])).sum())
    return {"selected": selected / eligible, "mask": masked / selected,
            "random": (selected - masked - kept) / selected, "keep": kept / selected, "n": eligible}


def with_originals(collator, examples, batch_size=64):
    out = []
    for i in range(0, len(examples), batch_size):
        chunk = examples[i : i + batch_size]
        orig = collator.pad(chunk)
        orig["maskable"] = ~collator.special_tokens_mask(orig["input_ids"], orig["attention_mask"])
        out.append((collator(chunk), orig))
    return out


def test_rates_and_invariants_on_real_text(tokenizer, examples):
    collator = MLMCollator(tokenizer, seed=0)
    batches = with_originals(collator, examples)
    s = stats(batches, tokenizer.mask_token_id)
    assert s["n"] >= MIN_TOKENS
    assert abs(s["selected"] - 0.15) < 0.004, s
    assert abs(s["mask"] - 0.80) < 0.01, s
    assert abs(s["random"] - 0.10) < 0.01, s
    assert abs(s["keep"] - 0.10) < 0.01, s
    special_ids = torch.tensor(tokenizer.all_special_ids)
    assert sum(int((o["attention_mask"] == 0).sum()) for _, o in batches) > 10_000  # padding was there
    for b, orig in batches:
        sel = b["labels"] != IGNORE_INDEX
        assert not (sel & ~orig["maskable"]).any(), "a special token or padding was selected"
        assert torch.equal(b["labels"][sel], orig["input_ids"][sel]), "labels must be the original ids"
        # unselected positions are untouched; padding stays padding
        assert torch.equal(b["input_ids"][~sel], orig["input_ids"][~sel])
        assert torch.equal(b["attention_mask"], orig["attention_mask"])
        replaced = sel & (b["input_ids"] != orig["input_ids"]) & (b["input_ids"] != tokenizer.mask_token_id)
        new = b["input_ids"][replaced]
        assert not torch.isin(new, special_ids).any(), "random replacement drew a special token"
        assert not any(t.startswith("[") for t in tokenizer.convert_ids_to_tokens(new.tolist()))


def test_tolerance_can_fail(tokenizer, examples):
    """The 0.004 tolerance separates 15% from 16% on this much text."""
    s = stats(with_originals(MLMCollator(tokenizer, mlm_probability=0.16, seed=0), examples),
              tokenizer.mask_token_id)
    assert abs(s["selected"] - 0.15) > 0.004


def test_mask_tokens_does_not_modify_input_and_is_seeded():
    ids = torch.arange(10, 2010).reshape(4, 500)
    before = ids.clone()
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = True
    kw = dict(mask_token_id=3, vocab_size=5000, special_tokens_mask=special)
    a = mask_tokens(ids, generator=torch.Generator().manual_seed(1), **kw)
    b = mask_tokens(ids, generator=torch.Generator().manual_seed(1), **kw)
    c = mask_tokens(ids, generator=torch.Generator().manual_seed(2), **kw)
    assert torch.equal(ids, before)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    # default random candidates exclude [MASK] and ids seen at special positions
    sel = a[1] != IGNORE_INDEX
    rnd = sel & (a[0] != ids) & (a[0] != 3)
    assert not torch.isin(a[0][rnd], ids[:, 0]).any()
    # 1-D input works too
    x, y = mask_tokens(ids[0], **{**kw, "special_tokens_mask": special[0]})
    assert x.shape == y.shape == ids[0].shape


def test_whole_word_never_splits_a_word(tokenizer, encodings, examples):
    collator = MLMCollator(tokenizer, whole_word=True, seed=0)
    batches = with_originals(collator, examples)
    s = stats(batches, tokenizer.mask_token_id)
    assert abs(s["selected"] - 0.15) < 0.004, s  # the rate still counts tokens
    assert abs(s["mask"] - 0.80) < 0.02 and abs(s["keep"] - 0.10) < 0.02, s
    split_words = words = multi_piece = 0
    for bi, (b, _) in enumerate(batches):
        for row in range(b["input_ids"].shape[0]):
            wids = encodings.word_ids(bi * 64 + row)
            sel = (b["labels"][row] != IGNORE_INDEX).tolist()
            is_mask = (b["input_ids"][row] == tokenizer.mask_token_id).tolist()
            groups: dict[int, list[int]] = {}
            for pos, w in enumerate(wids):
                if w is not None:
                    groups.setdefault(w, []).append(pos)
            for positions in groups.values():
                words += 1
                multi_piece += len(positions) > 1
                if len({sel[p] for p in positions}) > 1 or len({is_mask[p] for p in positions}) > 1:
                    split_words += 1
    assert split_words == 0, f"{split_words} of {words} words were partly selected or partly [MASK]ed"
    assert multi_piece > 1000  # the check had words with several pieces to get wrong


def test_word_ids_match_transformers(tokenizer, encodings):
    collator = MLMCollator(tokenizer)
    for i in range(300):
        ids = torch.tensor(encodings["input_ids"][i])
        special = torch.tensor(encodings["special_tokens_mask"][i]).bool()
        ours = word_ids_from_wordpieces(ids, collator.is_continuation, special).tolist()
        theirs = [-1 if w is None else w for w in encodings.word_ids(i)]
        assert ours == theirs, tokenizer.convert_ids_to_tokens(ids.tolist())


def test_token_level_split_breaks_words(tokenizer, examples):
    """The failure whole-word masking fixes is real: token-level masking hides part of words."""
    b = MLMCollator(tokenizer, seed=0)(examples[:64])
    col = MLMCollator(tokenizer)
    orig = col.pad(examples[:64])["input_ids"]
    special = col.special_tokens_mask(orig, b["attention_mask"])
    wids = word_ids_from_wordpieces(orig, col.is_continuation, special)
    sel = b["labels"] != IGNORE_INDEX
    partial = 0
    for r in range(orig.shape[0]):
        for w in wids[r][sel[r]].unique().tolist():
            partial += len(set(sel[r][wids[r] == w].tolist())) > 1
    assert partial > 0


def test_rates_match_transformers(tokenizer, encodings, examples):
    """Same batches through transformers' DataCollatorForLanguageModeling and MLMCollator."""
    hf = transformers.DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=0)
    ours = MLMCollator(tokenizer, seed=1)
    hf_sel = hf_mask = hf_keep = ours_sel = ours_mask = ours_keep = eligible = 0
    for i in range(0, len(examples), 64):
        rows = [{"input_ids": encodings["input_ids"][j],
                 "special_tokens_mask": encodings["special_tokens_mask"][j]}
                for j in range(i, min(i + 64, len(examples)))]
        h = hf(rows)
        orig = ours.pad(rows)
        o = ours(rows)
        maskable = ~ours.special_tokens_mask(orig["input_ids"], orig["attention_mask"])
        eligible += int(maskable.sum())
        for b, counts in ((h, "hf"), (o, "ours")):
            sel = b["labels"] != IGNORE_INDEX
            # transformers may select [UNK] (its special_tokens_mask marks only added tokens); we never do
            outside = sel & ~maskable & (orig["input_ids"] != tokenizer.unk_token_id)
            assert not outside.any(), f"{counts} selected a special or padding position"
            n_sel, n_mask = int(sel.sum()), int((sel & (b["input_ids"] == tokenizer.mask_token_id)).sum())
            n_keep = int((sel & (b["input_ids"] == orig["input_ids"])).sum())
            if counts == "hf":
                hf_sel, hf_mask, hf_keep = hf_sel + n_sel, hf_mask + n_mask, hf_keep + n_keep
            else:
                ours_sel, ours_mask, ours_keep = ours_sel + n_sel, ours_mask + n_mask, ours_keep + n_keep
    assert abs(hf_sel / eligible - ours_sel / eligible) < 0.004
    assert abs(hf_mask / hf_sel - ours_mask / ours_sel) < 0.015
    assert abs(hf_keep / hf_sel - ours_keep / ours_sel) < 0.015


def test_whole_word_rate_matches_transformers(tokenizer, encodings, examples):
    """transformers' whole-word collator also selects ~15% of tokens (it forces [MASK] on all)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = transformers.DataCollatorForLanguageModeling(tokenizer, whole_word_mask=True, seed=0)
    ours = MLMCollator(tokenizer, whole_word=True, seed=1)
    hf_sel = ours_sel = eligible = 0
    for i in range(0, len(examples), 64):
        idx = range(i, min(i + 64, len(examples)))
        rows = [{"input_ids": encodings["input_ids"][j], "special_tokens_mask": encodings["special_tokens_mask"][j]}
                for j in idx]
        batch = tokenizer.pad(rows, return_tensors="pt")
        # transformers finds words from character offsets; pad them by hand (pad() cannot)
        offsets = torch.zeros(*batch["input_ids"].shape, 2, dtype=torch.long)
        for r, j in enumerate(idx):
            offsets[r, : len(encodings["offset_mapping"][j])] = torch.tensor(encodings["offset_mapping"][j])
        hf.generator = hf.generator or torch.Generator().manual_seed(0)
        h_inputs, h_labels = hf.torch_mask_tokens(batch["input_ids"], batch["special_tokens_mask"], offsets)
        h = {"labels": h_labels}
        o = ours([{"input_ids": encodings["input_ids"][j]} for j in idx])
        eligible += int((o["attention_mask"].sum() - torch.tensor(
            [sum(encodings["special_tokens_mask"][j]) for j in idx]).sum()))
        hf_sel += int((h["labels"] != IGNORE_INDEX).sum())
        ours_sel += int((o["labels"] != IGNORE_INDEX).sum())
    assert abs(hf_sel / eligible - 0.15) < 0.006
    assert abs(ours_sel / eligible - hf_sel / eligible) < 0.008


def test_static_repeats_dynamic_does_not(tokenizer, examples):
    subset = examples[:256]

    def labels_by_idx(collator, n=3):
        out = []
        for epoch in range(n):
            order = torch.randperm(len(subset), generator=torch.Generator().manual_seed(epoch)).tolist()
            by_idx = {}
            for i in range(0, len(order), 32):
                chunk = [subset[j] for j in order[i : i + 32]]
                b = collator(chunk)
                for r, ex in enumerate(chunk):
                    n_tok = len(ex["input_ids"])
                    by_idx[ex["idx"]] = b["labels"][r, :n_tok].clone()
            out.append(by_idx)
        return out

    static = labels_by_idx(MLMCollator(tokenizer, static=True, seed=0))
    dynamic = labels_by_idx(MLMCollator(tokenizer, static=False, seed=0))
    for e in (1, 2):
        assert all(torch.equal(static[0][k], static[e][k]) for k in static[0])
        same = sum(torch.equal(dynamic[0][k], dynamic[e][k]) for k in dynamic[0])
        assert same < 5, f"dynamic masking repeated {same} of {len(subset)} masks"
    # a different seed gives a different static mask
    other = labels_by_idx(MLMCollator(tokenizer, static=True, seed=1), n=1)[0]
    assert sum(torch.equal(static[0][k], other[k]) for k in other) < 5
    # and a DataLoader works with the collator as collate_fn, passing NSP labels through
    rows = [{**ex, "token_type_ids": [0] * len(ex["input_ids"]), "next_sentence_label": ex["idx"] % 2}
            for ex in subset[:8]]
    b = next(iter(DataLoader(rows, batch_size=8, collate_fn=MLMCollator(tokenizer, static=True))))
    assert set(b) == {"input_ids", "token_type_ids", "attention_mask", "labels", "next_sentence_label"}
    assert b["next_sentence_label"].tolist() == [i % 2 for i in range(8)]


def test_loss_only_at_selected_positions(tokenizer, examples):
    b = MLMCollator(tokenizer, seed=0)(examples[:16])
    logits = torch.randn(*b["labels"].shape, tokenizer.vocab_size, generator=torch.Generator().manual_seed(0))
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), b["labels"].flatten())
    sel = b["labels"] != IGNORE_INDEX
    assert sel.any() and (~sel).any()  # else the two sides are trivially equal (or both nan)
    by_hand = torch.nn.functional.cross_entropy(logits[sel], b["labels"][sel])
    assert torch.allclose(loss, by_hand)


def test_bad_input_gives_clear_errors(tokenizer):
    ids = torch.tensor([[101, 2000, 102]])
    special = torch.tensor([[True, False, True]])
    kw = dict(mask_token_id=103, vocab_size=30522)
    with pytest.raises(ValueError, match="mlm_probability"):
        mask_tokens(ids, special_tokens_mask=special, mlm_probability=1.5, **kw)
    with pytest.raises(TypeError, match="input_ids"):
        mask_tokens([[101, 2000, 102]], special_tokens_mask=special, **kw)
    with pytest.raises(ValueError, match="shape"):
        mask_tokens(ids, special_tokens_mask=special[:, :2], **kw)
    with pytest.raises(ValueError, match="word_ids"):
        whole_word_mask(ids, word_ids=torch.tensor([[-1, 0]]), special_tokens_mask=special, **kw)
    with pytest.raises(KeyError, match="idx"):
        MLMCollator(tokenizer, static=True)([{"input_ids": [101, 2000, 102]}])
    with pytest.raises(ValueError, match="empty"):
        MLMCollator(tokenizer)([])
    with pytest.raises(ValueError, match="non-empty"):
        MLMCollator(tokenizer)([{"input_ids": []}])
    with pytest.raises(ValueError, match="vocabulary"):
        MLMCollator(tokenizer)([{"input_ids": [101, 40000, 102]}])
    with pytest.raises(ValueError, match="mlm_probability"):
        MLMCollator(tokenizer, mlm_probability=-0.1)


def test_collator_with_bertmini_tokenizer_matches_transformers_tables(tokenizer, examples):
    from bertmini.tokenization import BertTokenizer

    ours = MLMCollator(BertTokenizer.from_vocab(data.minilm_vocab_path()), seed=3)
    theirs = MLMCollator(tokenizer, seed=3)
    assert torch.equal(ours.is_special, theirs.is_special)
    assert torch.equal(ours.random_token_ids, theirs.random_token_ids)
    assert torch.equal(ours.is_continuation, theirs.is_continuation)
    a, b = ours(examples[:32]), theirs(examples[:32])
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_other_splits(tokenizer, examples):
    """mask_replace_prob / random_replace_prob change the split as in transformers."""
    col = MLMCollator(tokenizer, seed=0, mask_replace_prob=1.0, random_replace_prob=0.0)
    s = stats(with_originals(col, examples[:600]), tokenizer.mask_token_id)
    assert s["mask"] == 1.0 and s["random"] == 0.0
    col = MLMCollator(tokenizer, seed=0, mask_replace_prob=0.0, random_replace_prob=0.0)
    s = stats(with_originals(col, examples[:600]), tokenizer.mask_token_id)
    assert s["keep"] == 1.0
    with pytest.raises(ValueError, match="exceed"):
        MLMCollator(tokenizer, mask_replace_prob=0.8, random_replace_prob=0.3)
