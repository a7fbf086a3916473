"""Lab 1's checkers: WordPiece's merge score and greedy longest-match-first encoding."""
from __future__ import annotations

import math
import random
from collections.abc import Callable

from ..tokenization import (MAX_WORD_CHARS, SCORES, SPECIAL_TOKENS, UNK, BertTokenizer, WordPieceTrainer,
                            count_pairs, count_words, spell)
from .core import Check, bert_tokenizer, show, wiki_texts


def check_merge_score(fn: Callable) -> None:
    """WordPiece's merge score: ``fn(pair_count, left_count, right_count) -> float`` is
    ``count(ab) / (count(a) * count(b))`` (``bertmini.tokenization.SCORES["likelihood"]``),
    checked on every pair of chapter 1's toy corpus and on counts up to a billion; then the
    pair it ranks first on the toy corpus must be the one ``WordPieceTrainer`` merges first."""
    check = Check("check_merge_score", fn)
    reference = SCORES["likelihood"]
    toy = {"hug": 10, "pug": 5, "pun": 12, "bun": 4, "hugs": 5}
    units, pairs = count_pairs([(spell(w), c) for w, c in toy.items()])
    cases = [(f"toy pair {a!r} + {b!r}", c, units[a], units[b]) for (a, b), c in pairs.items()]
    rng = random.Random(0)
    for _ in range(200):
        c_a, c_b = rng.randint(1, 10**rng.randint(1, 9)), rng.randint(1, 10**rng.randint(1, 9))
        cases.append(("random counts", rng.randint(1, min(c_a, c_b)), c_a, c_b))
    cases += [("a pair seen once, of pieces seen once", 1, 1, 1), ("large counts", 10**9, 10**9, 10**9)]
    for what, c_ab, c_a, c_b in cases:
        case = f"{what}: pair_count={c_ab:,}, left_count={c_a:,}, right_count={c_b:,}"
        got = check.call(case, c_ab, c_a, c_b)
        want = reference(c_ab, c_a, c_b, 0)
        try:
            value = float(got)
        except (TypeError, ValueError):
            value = None
        hint = _score_hint(value, c_ab, c_a, c_b)
        check.expect(value is not None and math.isclose(value, want, rel_tol=1e-9, abs_tol=1e-300), case,
                     f"{want!r}  (bertmini.tokenization.SCORES['likelihood'])", show(got), hint)
    trainer = WordPieceTrainer(vocab_size=len(SPECIAL_TOKENS) + 8, min_frequency=1, score="likelihood")
    trainer.train(toy)
    first = trainer.merges[0]
    rank = {p: i for i, p in enumerate(trainer.alphabet)}
    best = max(pairs, key=lambda p: (float(fn(pairs[p], units[p[0]], units[p[1]])), pairs[p],
                                     -rank[p[0]], -rank[p[1]]))
    check.expect(best == (first.left, first.right), "the first merge on the toy corpus "
                 f"{toy}", f"{first.left!r} + {first.right!r} (WordPieceTrainer's first merge)",
                 f"{best[0]!r} + {best[1]!r}", "the highest score must win; check the formula")
    check.passed(f"first toy merge {first.left} + {first.right} -> {first.token}, as WordPieceTrainer's")


def _score_hint(value, c_ab, c_a, c_b) -> str:
    if value is None:
        return "return a number (a float), e.g. pair_count / (left_count * right_count)"
    if value == c_ab // (c_a * c_b) and c_ab % (c_a * c_b):
        return "use true division `/`: `//` rounds the score down to a whole number"
    for wrong, hint in ((c_ab / (c_a + c_b), "divide by the PRODUCT count(a) * count(b), not the sum"),
                        (float(c_ab), "count(ab) alone is BPE's rule; WordPiece divides it by count(a) * count(b)"),
                        (c_a * c_b / c_ab, "the score is upside down: count(ab) goes on top"),
                        (c_ab / c_a, "divide by count(b) too"), (c_ab / c_b, "divide by count(a) too")):
        if math.isclose(value, wrong, rel_tol=1e-9):
            return hint
    return "score = pair_count / (left_count * right_count)"


def check_wordpiece(fn: Callable) -> None:
    """Greedy longest-match-first WordPiece: ``fn(word, vocab) -> list[str]``.

    From the start of the word, take the longest piece in ``vocab``, then the longest piece that
    continues it (looked up and returned with a ``##`` prefix), until the word is covered. A word
    with a position no piece covers, or longer than 100 characters, is ``["[UNK]"]``. ``vocab``
    is a set or a mapping (piece -> id). Checked on the real 30,522-piece vocabulary (words of
    Wikipedia articles and edge cases, against bertmini's ``BertTokenizer`` and ``tokenizers``'
    ``WordPiece`` model) and on small vocabularies where the greedy choice matters."""
    from tokenizers.models import WordPiece

    check = Check("check_wordpiece", fn)
    bert = bert_tokenizer()
    words = sorted(count_words(wiki_texts(40)))
    rng = random.Random(0)
    edge = ["a", "unaffable", "tokenization", "schwarzenegger", "🤗", "ab🤗cd", "x" * MAX_WORD_CHARS,
            "x" * (MAX_WORD_CHARS + 1), "1984", "naïve", "北", "##"]
    real = [(w, "bert-base-uncased's vocabulary") for w in edge + rng.sample(words, min(600, len(words)))]
    toys = {  # small vocabularies where the greedy, longest-first choice decides
        "toy A": ["a", "ab", "abc", "b", "##b", "##c", "##bc", "##d"],
        "toy B (greedy, no backtracking)": ["a", "ab", "##bc"],
        "toy C (continuations need ##)": ["ab", "c", "##d"],
    }
    toy_words = ["abcd", "abd", "ad", "d", "bb", "abcx", "abc", "ab", "abdd", "c"]
    kinds = {"a set": set, "a dict piece -> id": lambda pieces: {p: i for i, p in enumerate(pieces)}}
    hf = WordPiece(dict(bert.vocab), unk_token=UNK, max_input_chars_per_word=MAX_WORD_CHARS)
    for kind, make in kinds.items():
        vocab = make(bert.ids_to_tokens)
        for word, where in real:
            want = [bert.ids_to_tokens[i] for i, _, _ in bert.wordpiece(word)]
            agree = [t.value for t in hf.tokenize(word)] == want
            _check_pieces(check, word, vocab, f"{where} as {kind}", want,
                          "bertmini's BertTokenizer" + (" and tokenizers' WordPiece" if agree else ""))
        for name, pieces in toys.items():
            tokenizer = BertTokenizer([*SPECIAL_TOKENS, *pieces])
            vocab = make([*SPECIAL_TOKENS, *pieces])
            for word in toy_words:
                want = [tokenizer.ids_to_tokens[i] for i, _, _ in tokenizer.wordpiece(word)]
                _check_pieces(check, word, vocab, f"{name} {pieces} as {kind}", want,
                              "bertmini's BertTokenizer")
    check.passed("the real vocabulary as a set and as a dict, and three small ones")


def _check_pieces(check: Check, word: str, vocab, where: str, want: list[str], source: str) -> None:
    __tracebackhide__ = True
    case = f"the word {word if len(word) <= 40 else word[:12] + '...'!r} ({len(word)} characters), {where}"
    got = check.call(case, word, vocab)
    pieces = list(got) if isinstance(got, (list, tuple)) else got
    check.expect(pieces == want, case, f"{want}  ({source})", show(got), _wordpiece_hint(word, want, pieces))


def _wordpiece_hint(word: str, want: list[str], got) -> str:
    if not isinstance(got, list) or not all(isinstance(p, str) for p in got):
        return "return a list of piece strings such as ['una', '##ffa', '##ble'] (not ids, not one string)"
    if want == [UNK] and len(word) > MAX_WORD_CHARS:
        return f"a word longer than {MAX_WORD_CHARS} characters is ['[UNK]'] without looking it up"
    if want == [UNK] and UNK in got:
        return "a word that cannot be covered is ONE ['[UNK]'], not its pieces plus '[UNK]'"
    if want == [UNK] and "".join(p.removeprefix("##") for p in got) == word:
        return ("greedy longest-match does not backtrack: when nothing continues after the longest "
                "first piece, the whole word is ['[UNK]'], even if a shorter first piece would have worked")
    if got and got[0].startswith("##"):
        return "the first piece of a word has no '##' prefix"
    if any(not p.startswith("##") for p in got[1:]):
        return "a piece that continues a word is looked up, and returned, WITH the '##' prefix"
    if "".join(p.removeprefix("##") for p in got) == word:
        return ("take the LONGEST piece at each position: try the whole rest of the word first, "
                "then one character shorter, and so on")
    return "the pieces, '##' removed, must spell the word exactly"
