"""Forward throughput of bertmini's BertModel vs transformers.BertModel, same config, same weights.

Both models get identical weights (bertmini -> ``to_hf``) and identical batches, in
eval mode under ``torch.inference_mode``. Timings alternate between the two in
one run (so background load hits both alike) and the median of several repeats
is kept. Cases: a full batch (no padding) and a padded batch (a quarter of the
positions padding), for two sizes.

    .venv/bin/python bench/encoder_forward.py            # ~1 min on 2 CPU cores
    BENCH_REPEATS=3 .venv/bin/python bench/encoder_forward.py

The last line is ``speedup_vs_transformers=X.XX``: the geometric mean over the cases
of (transformers time / bertmini time); above 1 means bertmini is faster.
"""
from __future__ import annotations

import math
import os
import statistics
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import torch  # noqa: E402

from bertmini.config import BertConfig  # noqa: E402
from bertmini.hf import to_hf  # noqa: E402
from bertmini.model import BertModel  # noqa: E402

REPEATS = int(os.environ.get("BENCH_REPEATS", "7"))
ON_GPU = torch.cuda.is_available()
DEVICE = torch.device("cuda" if ON_GPU else "cpu")
if not ON_GPU:
    torch.set_num_threads(min(2, os.cpu_count() or 1))

# (name, config, batch, seq)
CASES = [
    ("mini 4x256", BertConfig.preset("mini"), 32, 128),
    ("minilm 6x384", BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                intermediate_size=1536), 16, 128),
]
if ON_GPU:
    CASES.append(("base 12x768", BertConfig.preset("base"), 64, 256))


def sync():
    if ON_GPU:
        torch.cuda.synchronize()


def time_call(fn, n_inner: int) -> float:
    sync()
    t = time.perf_counter()
    for _ in range(n_inner):
        fn()
    sync()
    return (time.perf_counter() - t) / n_inner


def main() -> None:
    print(f"torch {torch.__version__}, device {DEVICE}, threads {torch.get_num_threads()}, repeats {REPEATS}")
    ratios = []
    for name, config, batch, seq in CASES:
        torch.manual_seed(0)
        ours = BertModel(config).eval().to(DEVICE)
        theirs = to_hf(ours).eval().to(DEVICE)
        ids = torch.randint(1, config.vocab_size, (batch, seq), device=DEVICE)
        for padded in (False, True):
            mask = torch.ones_like(ids)
            if padded:  # rows of decreasing length, ~25% padding overall
                lengths = torch.linspace(seq, seq // 2, batch, device=DEVICE).long()
                mask = (torch.arange(seq, device=DEVICE)[None] < lengths[:, None]).long()
            inputs = dict(input_ids=ids, attention_mask=mask)
            with torch.inference_mode():
                diff = (ours(**inputs).last_hidden_state - theirs(**inputs).last_hidden_state)[mask.bool()]
                assert diff.abs().max() < 1e-4, f"outputs differ by {diff.abs().max():.2e}"
                run_ours, run_theirs = (lambda: ours(**inputs)), (lambda: theirs(**inputs))
                for fn in (run_ours, run_theirs):  # warm-up
                    fn()
                n_inner = 20 if ON_GPU else 1
                t_ours, t_theirs = [], []
                for _ in range(REPEATS):
                    t_ours.append(time_call(run_ours, n_inner))
                    t_theirs.append(time_call(run_theirs, n_inner))
            m_ours, m_theirs = statistics.median(t_ours), statistics.median(t_theirs)
            ratio = m_theirs / m_ours
            ratios.append(ratio)
            tokens = batch * seq
            label = f"{name}, batch {batch} x seq {seq}, {'padded' if padded else 'full'}"
            print(f"{label:<44} bertmini {tokens / m_ours:>9,.0f} tok/s   "
                  f"transformers {tokens / m_theirs:>9,.0f} tok/s   ratio {ratio:.2f}")
    geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    print(f"speedup_vs_transformers={geo:.2f}")


if __name__ == "__main__":
    main()
