"""Inference speed of chapter 6b's three classifiers: the teacher, the distilled student, the int8 student.

The teacher is the real MiniLM (6 layers x 384) with a sentiment head, the student the same with
layers 0, 2 and 4 only (DistilBERT's initialisation), the int8 student the student after PyTorch's
dynamic quantisation of its linear layers. Speed does not depend on what the weights have learned,
so nothing is trained here: the shapes are the chapter's, the weights MiniLM's. The sentences are
the sentiment test split, encoded as chapter 5a encodes them (at most 64 tokens, batches padded to
their longest). Timings alternate between the models within each repeat (so background load hits
all alike) and the median of the repeats is kept; fp32 forward passes, eval mode, no gradients.

    .venv/bin/python bench/distilled_inference.py          # about a minute on 2 CPU cores
    BENCH_REPEATS=3 .venv/bin/python bench/distilled_inference.py

Prints sentences per second at batch 32 and milliseconds per sentence at batch 1 for each model,
and the ratios to the teacher. The last line is ``speedup_vs_teacher=X.XX``: the student's
throughput at batch 32 over the teacher's (DistilBERT's aim for half the layers: about 1.8x or more).
"""
from __future__ import annotations

import os
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import torch  # noqa: E402

from bertmini import data, runtime  # noqa: E402
from bertmini.distillation import quantize_int8, student_from_teacher, time_inference  # noqa: E402
from bertmini.finetuning import encode_classification  # noqa: E402
from bertmini.hf import load_pretrained  # noqa: E402
from bertmini.task_heads import BertForSequenceClassification  # noqa: E402
from bertmini.tokenization import BertTokenizer  # noqa: E402

REPEATS = int(os.environ.get("BENCH_REPEATS", "5"))
N_BATCHED, N_SINGLE = 1024, 128


def main() -> None:
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    runtime.seed_everything(0)
    teacher = BertForSequenceClassification.from_encoder(load_pretrained(data.minilm_path()), num_labels=2).eval()
    student = student_from_teacher(teacher, (0, 2, 4)).eval()
    models = {"teacher": teacher, "student": student, "student int8": quantize_int8(student)}
    tokenizer = BertTokenizer.from_vocab(data.minilm_vocab_path())
    texts = [t for t, _ in data.sentiment("test")]
    examples = encode_classification(tokenizer, texts[:N_BATCHED], max_length=64)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, quantized engine "
          f"{torch.backends.quantized.engine}, repeats {REPEATS}, {N_BATCHED} sentences at batch 32, "
          f"{N_SINGLE} at batch 1")
    batched = time_inference(models, examples, batch_size=32, repeats=REPEATS)
    single = time_inference(models, examples[:N_SINGLE], batch_size=1, repeats=REPEATS)
    for name in models:
        print(f"{name:<13} {1 / batched[name]:>8,.0f} sentences/s at batch 32 "
              f"({batched['teacher'] / batched[name]:.2f}x the teacher)   "
              f"{1000 * single[name]:6.2f} ms per sentence at batch 1 "
              f"({single['teacher'] / single[name]:.2f}x faster than the teacher)")
    print(f"int8 over the float student: {batched['student'] / batched['student int8']:.2f}x at batch 32, "
          f"{single['student'] / single['student int8']:.2f}x at batch 1")
    print(f"speedup_vs_teacher={batched['teacher'] / batched['student']:.2f}")


if __name__ == "__main__":
    main()
