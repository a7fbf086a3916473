"""WordPiece training without recounting: the fast twin of
``bertmini.tokenization.WordPieceTrainer``.

The plain trainer recounts every pair in the corpus before each merge. This one
counts once and then keeps the counts up to date. Merging ``a b`` into ``z``
changes only the words that contain ``a b``, so only those are re-spelled, and
pair counts change by the difference. A heap holds the pairs by score; an entry
whose score is out of date is skipped when it reaches the top, so every pair
whose score may have changed is pushed again. That includes pairs outside the
merged words that share a piece with them: their own count is the same, but the
count of one of their pieces changed, and ``"gain"`` and ``"likelihood"``
depend on it.

It learns the same pieces in the same order as the plain trainer, ties
included; ``tests/test_tokenization.py`` checks this on Wikipedia and on hand
cases.
"""
from __future__ import annotations

import heapq
from collections import Counter

from ..tokenization import CONTINUATION, SCORES, Merge, WordPieceTrainer, merge_pair


class FastWordPieceTrainer(WordPieceTrainer):
    """``WordPieceTrainer`` with counts kept up to date: same arguments, same results."""

    def learn_merges(self, words: list[tuple[list[str], int]], vocab: list[str], bar=None) -> None:
        index = PairIndex(words, vocab, self.score, self.min_frequency)
        while len(vocab) < self.vocab_size:
            best = index.pop_best()
            if best is None:
                break
            (a, b), count, score = best
            left, right = vocab[a], vocab[b]
            token = left + right.removeprefix(CONTINUATION)
            is_new = token not in index.ids
            index.merge(a, b, token)   # appends a new token to vocab
            if is_new:
                self.merges.append(Merge(left, right, token, count, score))
                if bar is not None:
                    bar.update(1)


class PairIndex:
    """The corpus as words of piece ids, with the count of every piece and pair,
    the words that hold each pair, and a heap of pairs ordered as the plain
    trainer ranks them (score, then count, then the earlier pieces)."""

    def __init__(self, words: list[tuple[list[str], int]], vocab: list[str], score: str,
                 min_frequency: int):
        self.vocab = vocab   # shared with the trainer: merge() appends new pieces
        self.ids = {piece: i for i, piece in enumerate(vocab)}
        self.words = [[self.ids[p] for p in pieces] for pieces, _ in words]
        self.freqs = [count for _, count in words]
        self.score_fn = SCORES[score]
        self.scores_use_units = score != "count"
        self.min_frequency = min_frequency
        self.units: Counter = Counter()                  # count(a)
        self.pairs: Counter = Counter()                  # count(ab)
        self.where: dict[tuple[int, int], set[int]] = {}  # ab -> words that hold it
        self.partners: dict[int, set[tuple[int, int]]] = {}  # a -> pairs with a in them
        for i, (word, f) in enumerate(zip(self.words, self.freqs)):
            for s in word:
                self.units[s] += f
            for p in zip(word, word[1:]):
                self.pairs[p] += f
                self.where.setdefault(p, set()).add(i)
        for p in self.pairs:
            self._link(p)
        self.n = sum(self.units.values())
        self._rebuild_heap()

    def _entry(self, p: tuple[int, int]) -> tuple[float, int, tuple[int, int]]:
        c = self.pairs[p]
        return -self.score_fn(c, self.units[p[0]], self.units[p[1]], self.n), -c, p

    def _rebuild_heap(self) -> None:
        self.heap = [self._entry(p) for p, c in self.pairs.items() if c >= self.min_frequency]
        heapq.heapify(self.heap)

    def _link(self, p: tuple[int, int]) -> None:
        self.partners.setdefault(p[0], set()).add(p)
        self.partners.setdefault(p[1], set()).add(p)

    def pop_best(self) -> tuple[tuple[int, int], int, float] | None:
        """The best pair now, its count and score; None when no pair is frequent enough."""
        while self.heap:
            entry = heapq.heappop(self.heap)
            p = entry[2]
            if self.pairs.get(p, 0) >= self.min_frequency and entry == self._entry(p):
                return p, -entry[1], -entry[0]
        return None

    def merge(self, a: int, b: int, token: str) -> None:
        """Replace the pair ``a b`` by ``token`` in every word that holds it, update
        the counts, and push every pair whose score changed."""
        z = self.ids.get(token)
        if z is None:   # (else the same piece was reached before by another pair)
            z = self.ids[token] = len(self.vocab)
            self.vocab.append(token)
        unit_delta: Counter = Counter()
        pair_delta: Counter = Counter()
        for i in sorted(self.where[(a, b)]):   # a copy: _respell edits the set
            self._respell(i, a, b, z, unit_delta, pair_delta)
        for s, d in unit_delta.items():
            self.units[s] += d
        changed = {q for q, d in pair_delta.items() if d}
        for q in changed:
            self._add_to_pair(q, pair_delta[q])
        if self.scores_use_units:
            for s, d in unit_delta.items():
                if d:
                    changed |= self.partners.get(s, set())
        for q in changed:
            if self.pairs.get(q, 0) >= self.min_frequency:
                heapq.heappush(self.heap, self._entry(q))
        if len(self.heap) > 4 * len(self.pairs) + 100_000:
            self._rebuild_heap()   # drop the stale entries now and then

    def _respell(self, i: int, a: int, b: int, z: int, unit_delta: Counter, pair_delta: Counter) -> None:
        """Merge ``a b`` into ``z`` in word ``i`` and record how the counts change."""
        old = self.words[i]
        new = merge_pair(old, a, b, z)   # the plain trainer's function, here on ids
        f = self.freqs[i]
        for s in old:
            unit_delta[s] -= f
        for s in new:
            unit_delta[s] += f
        old_pairs = list(zip(old, old[1:]))
        new_pairs = list(zip(new, new[1:]))
        for q in old_pairs:
            pair_delta[q] -= f
        for q in new_pairs:
            pair_delta[q] += f
        for q in set(old_pairs) - set(new_pairs):
            self.where[q].discard(i)
        for q in set(new_pairs) - set(old_pairs):
            self.where.setdefault(q, set()).add(i)
        self.words[i] = new

    def _add_to_pair(self, q: tuple[int, int], d: int) -> None:
        self.pairs[q] += d
        if self.pairs[q] <= 0:
            del self.pairs[q]
            self.where.pop(q, None)
            self.partners[q[0]].discard(q)
            self.partners[q[1]].discard(q)
        else:
            self._link(q)
