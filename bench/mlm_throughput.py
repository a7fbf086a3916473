"""Training throughput of bertmini's masked LM vs ``transformers.BertForMaskedLM``.

Both models get the same configuration (4 layers x 256, 4 heads, FFN 1024,
sequence 128, batch 32, fp32, dropout 0.1), the same batches (15% of positions
labelled) and the same AdamW step; steps alternate between the two in one
process, and the median step time of each is reported as training tokens per
second. bertmini computes the vocabulary projection only at the masked positions
(``bertmini.heads``), ``transformers`` at every position.

It also reports bertmini's *model* FLOP/s (the matrix products a training step
must do: 6 x params x tokens for the dense layers, attention scores and values,
and the MLM head at the masked positions, counted once although bertmini's blocked loss
computes the head's forward product twice) as a fraction of this machine's
measured fp32 matmul rate (a 2048^3 matmul, best of two, timed just before each
bertmini step: the speed of a shared machine drifts within a run, so each step
is compared with the rate of its own moment; the median of those fractions).

    python bench/mlm_throughput.py            # ~1-2 minutes on 2 cores
    python bench/mlm_throughput.py --steps 5  # quicker, noisier

The last line is ``speedup_vs_transformers=X.XX`` for the 30,522 vocabulary.
Timings on a shared machine are noisy; run it alone.
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from bertmini.config import BertConfig  # noqa: E402
from bertmini.heads import BertForMaskedLM  # noqa: E402

SIZES = dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024)


@functools.lru_cache(maxsize=None)
def _square_operands(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm up the threads
    return a, b


def matmul_flops_per_s(n: int = 2048, repeats: int = 7) -> float:
    """Best fp32 rate of an n x n by n x n matmul (2 n^3 FLOPs) over ``repeats`` tries."""
    a, b = _square_operands(n)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def model_flops_per_step(cfg: BertConfig, batch: int, seq: int, n_masked: int) -> float:
    """Matmul FLOPs of one training step (forward + backward = 3 x forward) of bertmini's MLM."""
    h, f, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    tokens = batch * seq
    dense = layers * (4 * h * h + 2 * h * f)  # Q, K, V, output; FFN in and out
    forward = 2 * tokens * dense
    forward += layers * 2 * 2 * batch * seq * seq * h  # scores Q K^T and probabilities x V
    forward += 2 * n_masked * (h * h + h * cfg.vocab_size)  # head transform + tied decoder, masked rows only
    return 3 * forward


def make_batch(vocab_size: int, batch: int, seq: int, generator: torch.Generator):
    ids = torch.randint(5, vocab_size, (batch, seq), generator=generator)
    selected = torch.rand(batch, seq, generator=generator) < 0.15
    selected[:, 0] = selected[:, -1] = False  # [CLS] / [SEP] positions
    labels = torch.where(selected, ids, torch.full_like(ids, -100))
    return {"input_ids": ids, "token_type_ids": torch.zeros_like(ids),
            "attention_mask": torch.ones_like(ids), "labels": labels}


def build_models(vocab_size: int, seq: int):
    import transformers

    cfg = BertConfig(vocab_size=vocab_size, max_position_embeddings=max(seq, 512), **SIZES)
    torch.manual_seed(0)
    ours = BertForMaskedLM(cfg).train()
    theirs = transformers.BertForMaskedLM(cfg.to_hf()).train()
    # Same weights in both (names match; transformers also has the tied decoder bias).
    state = ours.state_dict()
    state["cls.predictions.decoder.bias"] = state["cls.predictions.bias"]
    theirs.load_state_dict(state, strict=False)
    return cfg, ours, theirs


def time_steps(vocab_size: int, batch_size: int, seq: int, steps: int, warmup: int = 2):
    cfg, ours, theirs = build_models(vocab_size, seq)
    optims = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, m in (("bertmini", ours), ("transformers", theirs))}
    models = {"bertmini": ours, "transformers": theirs}
    g = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {"bertmini": [], "transformers": []}
    masked, fractions = [], []
    for i in range(warmup + steps):
        batch = make_batch(vocab_size, batch_size, seq, g)
        masked.append(int((batch["labels"] != -100).sum()))
        peak = matmul_flops_per_s(repeats=2)  # the machine's rate now: a shared machine's speed drifts
        for name in (("bertmini", "transformers") if i % 2 == 0 else ("transformers", "bertmini")):
            model, opt = models[name], optims[name]
            t = time.perf_counter()
            loss = model(**batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i >= warmup:
                times[name].append(time.perf_counter() - t)
                if name == "bertmini":
                    fractions.append(model_flops_per_step(cfg, batch_size, seq, masked[-1]) / times[name][-1] / peak)
    tokens = batch_size * seq
    med = {k: statistics.median(v) for k, v in times.items()}
    flops = model_flops_per_step(cfg, batch_size, seq, statistics.median(masked))
    return {"bertmini_tok_s": tokens / med["bertmini"], "transformers_tok_s": tokens / med["transformers"],
            "speedup": med["transformers"] / med["bertmini"], "bertmini_flops_s": flops / med["bertmini"],
            "matmul_fraction": statistics.median(fractions)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=9, help="timed steps per model and vocabulary (median)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    peak = matmul_flops_per_s()
    print(f"torch {torch.__version__}, {args.threads} threads; fp32 matmul (2048^3): {peak / 1e9:.0f} GFLOP/s")
    print(f"config: {SIZES}, seq {args.seq}, batch {args.batch}, fp32, median of {args.steps} alternating steps")
    results = {}
    for vocab in (8000, 30522):
        r = results[vocab] = time_steps(vocab, args.batch, args.seq, args.steps)
        print(f"vocab {vocab:>6}: bertmini {r['bertmini_tok_s']:8,.0f} tok/s | transformers "
              f"{r['transformers_tok_s']:8,.0f} tok/s | speedup {r['speedup']:.2f}x | bertmini model "
              f"{r['bertmini_flops_s'] / 1e9:.0f} GFLOP/s = {r['matmul_fraction']:.0%} of matmul")
    print(f"speedup_vs_transformers={results[30522]['speedup']:.2f}")


if __name__ == "__main__":
    main()
