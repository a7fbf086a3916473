"""bertmini.train: the recipe against transformers, exact resume, checkpoints, bad input."""
from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bertmini import checkpoint
from bertmini import train as T
from bertmini.checkpoint import CheckpointMismatchError, load_checkpoint, save_checkpoint
from bertmini.history import History
from bertmini.train import TrainConfig, linear_warmup_decay, make_optimizer, optimizer_param_groups, train

torch.set_num_threads(1)  # tiny models: one thread is fastest and deterministic on a shared 2-core box


@dataclass
class Out:
    loss: torch.Tensor
    logits: torch.Tensor
    mse_loss: torch.Tensor | None = None
    sign_accuracy: torch.Tensor | None = None


class Regressor(nn.Module):
    """Small MLP with LayerNorm and dropout; the loss is a mean over examples."""

    def __init__(self, d_in: int = 8, d_hidden: int = 32, dropout: float = 0.1):
        super().__init__()
        self.dense = nn.Linear(d_in, d_hidden)
        self.LayerNorm = nn.LayerNorm(d_hidden)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(d_hidden, 1)

    def forward(self, x, y=None):
        pred = self.out(self.dropout(self.LayerNorm(torch.tanh(self.dense(x))))).squeeze(-1)
        if y is None:
            return Out(None, pred)
        loss = ((pred - y) ** 2).mean()
        return Out(loss, pred, mse_loss=loss.detach(), sign_accuracy=((pred > 0) == (y > 0)).float().mean())


class TiedLM(nn.Module):
    """A toy masked LM whose decoder is tied to the word embeddings, named as in BERT."""

    def __init__(self, vocab: int = 50, d: int = 16):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, d)
        self.LayerNorm = nn.LayerNorm(d)
        self.decoder = nn.Linear(d, vocab)
        self.decoder.weight = self.word_embeddings.weight

    def forward(self, input_ids, labels=None, attention_mask=None):
        logits = self.decoder(self.LayerNorm(self.word_embeddings(input_ids)))
        loss = None if labels is None else nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())
        return Out(loss, logits)


def collate(items, noise: float = 0.01):
    x = torch.stack([i[0] for i in items])
    # random noise in the collator, like dynamic masking: it must replay exactly on resume
    return {"x": x + noise * torch.randn_like(x), "y": torch.stack([i[1] for i in items])}


def regression_loader(n: int = 96, batch_size: int = 8, shuffle: bool = True, noise: float = 0.01) -> DataLoader:
    g = torch.Generator().manual_seed(123)
    x = torch.randn(n, 8, generator=g)
    y = x @ torch.linspace(-1, 1, 8) + 0.1 * torch.randn(n, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle,
                      collate_fn=lambda items: collate(items, noise))


def fresh_model(**kw) -> Regressor:
    torch.manual_seed(7)
    return Regressor(**kw)


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def config(**kw) -> TrainConfig:
    base = dict(lr=3e-3, max_steps=20, amp=None, progress=False, log_every=5, device="cpu")
    return TrainConfig(**{**base, **kw})


# ------------------------------------------------------------------ the recipe, against transformers


def test_linear_warmup_decay_matches_transformers():
    from transformers import get_linear_schedule_with_warmup

    for warmup, total in [(10, 100), (0, 7), (3, 3)]:
        ours = linear_warmup_decay(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), warmup, total)
        theirs = get_linear_schedule_with_warmup(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0),
                                                 warmup, total)
        for _ in range(total + 2):
            assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr(), abs=1e-12)
            ours.optimizer.step(), ours.step()
            theirs.optimizer.step(), theirs.step()
    # the peak is at the end of warmup, and the lr reaches 0 at the last step
    s = linear_warmup_decay(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0), 4, 10)
    lrs = []
    for _ in range(10):
        lrs.append(s.get_last_lr()[0])
        s.optimizer.step(), s.step()
    assert max(lrs) == lrs[4] == 2.0 and s.get_last_lr()[0] == 0.0


def test_param_groups_match_transformers_trainer():
    from transformers import BertConfig, BertForMaskedLM, Trainer

    torch.manual_seed(0)
    hf = BertForMaskedLM(BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=37))
    decay, no_decay = optimizer_param_groups(hf, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in hf.named_parameters()}
    ours = {names[id(p)] for p in decay["params"]}
    theirs = set(Trainer.get_decay_parameter_names(None, hf)) & set(names.values())
    assert ours == theirs
    assert any("LayerNorm.weight" in n for n in (names[id(p)] for p in no_decay["params"]))
    # the tied decoder appears once; frozen parameters are left out
    counted = [p for g in (decay, no_decay) for p in g["params"]]
    assert len(counted) == len({id(p) for p in counted}) == len(list(hf.parameters()))
    for p in hf.bert.parameters():
        p.requires_grad_(False)
    groups = optimizer_param_groups(hf, 0.01)
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in hf.parameters())
    opt = make_optimizer(hf, 1e-4, 0.01)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["eps"] == 1e-8


# ------------------------------------------------------------------ the loop


def test_train_learns_and_records_history():
    model = fresh_model()
    evals = []

    def eval_fn(m):
        assert not m.training and not torch.is_grad_enabled()
        evals.append(1)
        return {"eval_loss": 0.5, "n": torch.tensor(3)}

    hist = train(model, regression_loader(), config(max_steps=40, eval_every=15, warmup_ratio=0.25),
                 eval_fn=eval_fn)
    assert hist.steps == list(range(1, 41))
    assert sum(hist.losses[-10:]) < 0.5 * sum(hist.losses[:10])
    rec = hist.records[0]
    assert {"step", "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "elapsed", "mse_loss",
            "sign_accuracy"} <= set(rec)
    assert rec["tokens"] == 8 and rec["tokens_per_s"] > 0 and rec["lr"] == 0.0  # warmup starts at 0
    assert max(hist.lrs) == pytest.approx(3e-3) and hist.lrs.index(max(hist.lrs)) == 10
    assert [e["step"] for e in hist.evals] == [15, 30, 40] and len(evals) == 3
    assert hist.evals[0]["n"] == 3.0 and hist.stop_reason is None
    assert all(r["grad_norm"] >= 0 for r in hist.records)
    elapsed = [r["elapsed"] for r in hist.records]
    assert elapsed == sorted(elapsed)
    d = hist.to_dict()
    assert History.from_dict(json.loads(json.dumps(d))).to_dict() == d
    assert hist.series("mse_loss")[1] == pytest.approx(hist.losses)
    assert len(hist.smoothed("loss", 5)[1]) == 40 and not model.training
    import matplotlib

    matplotlib.use("Agg")
    ax = hist.plot("mse_loss", window=5)
    assert ax.get_xlabel() == "optimizer step" and ax.get_title() and len(ax.lines[0].get_xdata()) == 40
    import matplotlib.pyplot as plt

    plt.close(ax.figure)  # a figure left open fails test_diagrams' check if it runs later
    with pytest.raises(KeyError, match="recorded"):
        hist.series("nsp_loss")


def test_grad_accumulation_equals_the_big_batch():
    def run(batch_size, accum):
        model = fresh_model(dropout=0.0)
        loader = regression_loader(batch_size=batch_size, shuffle=False, noise=0.0)
        hist = train(model, loader, config(max_steps=6, grad_accum_steps=accum, max_grad_norm=0.5, log_every=1))
        return weights(model), hist

    (w1, h1), (w4, h4) = run(16, 1), run(4, 4)
    for k in w1:
        torch.testing.assert_close(w4[k], w1[k], rtol=1e-5, atol=1e-6)
    assert h4.losses == pytest.approx(h1.losses, rel=1e-5)
    assert h4.records[0]["tokens"] == h1.records[0]["tokens"] == 16


def test_train_step_is_the_recipe_written_out():
    """train_step, the step chapter 4 shows, against the same step spelled out by hand:
    each micro-batch's loss / accum back-propagated, the norm clipped, AdamW, the schedule."""
    g = torch.Generator().manual_seed(0)
    batches = [{"x": torch.randn(4, 8, generator=g), "y": torch.randn(4, generator=g)} for _ in range(4)]
    cfg = config(max_steps=2, warmup_steps=0, grad_accum_steps=2, max_grad_norm=0.05)
    ours, by_hand = fresh_model(dropout=0.0), fresh_model(dropout=0.0)
    opt, hand_opt = make_optimizer(ours, cfg.lr), make_optimizer(by_hand, cfg.lr)
    sched, hand_sched = linear_warmup_decay(opt, 0, 2), linear_warmup_decay(hand_opt, 0, 2)
    for step, micro in enumerate((batches[:2], batches[2:]), 1):
        means, norm = T.train_step(ours, iter(micro), opt, sched, cfg, step=step)
        losses = []
        for b in micro:
            loss = by_hand(**b).loss
            (loss / 2).backward()
            losses.append(loss.item())
        params = [p for group in hand_opt.param_groups for p in group["params"]]
        hand_norm = torch.nn.utils.clip_grad_norm_(params, 0.05)
        hand_opt.step()
        hand_sched.step()
        hand_opt.zero_grad()
        assert means["loss"].item() == pytest.approx(sum(losses) / 2, rel=1e-6)
        assert norm.item() == pytest.approx(hand_norm.item(), rel=1e-6) and norm > 0.05  # it clipped
        assert sched.get_last_lr() == hand_sched.get_last_lr()
        assert all(p.grad is None for p in ours.parameters())
    for k, v in weights(by_hand).items():
        assert torch.equal(weights(ours)[k], v), k


def test_epochs_and_callable_data():
    batches = [{"x": torch.randn(4, 8), "y": torch.randn(4)} for _ in range(5)]
    hist = train(fresh_model(), lambda: iter(batches), config(max_steps=12))
    assert len(hist) == 12  # a callable returns a fresh iterator for each of 3 epochs
    cfg = config(max_steps=None, epochs=2, grad_accum_steps=2)
    assert cfg.total_steps(batches) == 5
    assert len(train(fresh_model(), batches, cfg)) == 5


def test_bf16_autocast_trains():
    assert T.resolve_amp("bf16", torch.device("cpu")) == torch.bfloat16
    assert T.resolve_amp(None, torch.device("cpu")) is None
    assert T.resolve_amp("auto", torch.device("cpu")) in (torch.bfloat16, None)
    model = fresh_model()
    hist = train(model, regression_loader(), config(max_steps=30, amp="bf16"))
    assert sum(hist.losses[-5:]) < sum(hist.losses[:5])
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast, not a bf16 model
    # fp16 goes through a gradient scaler (on the CPU too); the skipped first steps raise no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hist = train(fresh_model(), regression_loader(), config(max_steps=30, amp="fp16"))
    assert sum(hist.losses[-5:]) < sum(hist.losses[:5])


def test_bertmini_amp_chooses_the_numeric_path_of_auto(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setenv("BERTMINI_AMP", "fp32")
    assert T.resolve_amp("auto", cpu) is None
    assert T.resolve_amp("bf16", cpu) == torch.bfloat16  # an explicit choice wins over the variable
    monkeypatch.setenv("BERTMINI_AMP", "bf16")
    assert T.resolve_amp("auto", cpu) == torch.bfloat16
    assert T.resolve_amp("fp32", cpu) is None and config(amp="fp32").amp == "fp32"
    monkeypatch.setenv("BERTMINI_AMP", "bf17")
    with pytest.raises(ValueError, match="BERTMINI_AMP"):
        T.resolve_amp("auto", cpu)


def test_bertmini_max_steps_caps_every_run(monkeypatch):
    """The smoke runs' override: every run, by steps or by epochs, stops at the cap."""
    monkeypatch.setenv("BERTMINI_MAX_STEPS", "7")
    assert config(max_steps=30).total_steps() == 7
    assert TrainConfig(lr=1e-3, epochs=3).total_steps(list(range(50))) == 7
    hist = train(fresh_model(), regression_loader(), config(max_steps=30))
    assert len(hist.losses) == 7
    monkeypatch.setenv("BERTMINI_MAX_STEPS", "100")
    assert config(max_steps=30).total_steps() == 30  # a cap above the run changes nothing
    monkeypatch.setenv("BERTMINI_MAX_STEPS", "0")
    with pytest.raises(ValueError, match="BERTMINI_MAX_STEPS"):
        config(max_steps=30).total_steps()
    monkeypatch.delenv("BERTMINI_MAX_STEPS")
    assert config(max_steps=30).total_steps() == 30


def test_max_time_s_stops_cleanly(tmp_path):
    class Slow(Regressor):
        def forward(self, x, y=None):
            time.sleep(0.02)
            return super().forward(x, y)

    model = Slow()
    hist = train(model, regression_loader(), config(max_steps=10_000, max_time_s=0.3, checkpoint_dir=tmp_path),
                 eval_fn=lambda m: {"done": 1.0})
    assert hist.stop_reason == "max_time_s" and 3 <= len(hist) < 100
    assert hist.evals[-1]["step"] == len(hist)
    assert load_checkpoint(tmp_path, Slow())["step"] == len(hist)  # a checkpoint_dir means its last one


# ------------------------------------------------------------------ exact resume


def test_stopped_and_resumed_run_ends_with_the_same_weights(tmp_path):
    # dropout on, a shuffled DataLoader, random noise in the collator, accumulation, an eval_fn that
    # draws random numbers, and a stop in the middle of an accumulated step across an epoch boundary
    def eval_fn(m):
        return {"noise": float(torch.rand(()))}

    cfg = dict(max_steps=17, grad_accum_steps=2, eval_every=4, log_every=3)
    full_model = fresh_model(dropout=0.3)
    full = train(full_model, regression_loader(n=40), config(**cfg), eval_fn=eval_fn)

    stop_at = 7  # 14 micro-batches: one epoch is 5 batches, so this is inside the third epoch
    part_model = fresh_model(dropout=0.3)
    part = train(part_model, regression_loader(n=40), config(**cfg, checkpoint_dir=tmp_path),
                 eval_fn=eval_fn, callbacks=[lambda info: info["step"] == stop_at])
    assert part.stop_reason == "callback" and len(part) == stop_at

    torch.manual_seed(999)  # whatever the global random state is now, resume restores the saved one
    resumed_model = fresh_model(dropout=0.3)
    resumed = train(resumed_model, regression_loader(n=40), config(**cfg, checkpoint_dir=tmp_path),
                    eval_fn=eval_fn, resume=True)
    w_full, w_resumed = weights(full_model), weights(resumed_model)
    for k in w_full:
        assert torch.equal(w_full[k], w_resumed[k]), k
    assert resumed.losses == full.losses and resumed.steps == full.steps
    # the stopped run evaluated when it stopped (step 7); that record is kept
    assert [e["step"] for e in resumed.evals] == [4, 7, 8, 12, 16, 17]
    assert [e["step"] for e in full.evals] == [4, 8, 12, 16, 17]
    assert not all(torch.equal(weights(part_model)[k], w_full[k]) for k in w_full)

    # resuming a finished run does nothing more
    again = train(fresh_model(dropout=0.3), regression_loader(n=40), config(**cfg, checkpoint_dir=tmp_path),
                  resume=True)
    assert again.steps == full.steps
    with pytest.warns(UserWarning, match="different lr"):
        train(fresh_model(dropout=0.3), regression_loader(n=40),
              config(**{**cfg, "max_steps": 18}, lr=1e-3, checkpoint_dir=tmp_path), resume=True)


def test_resume_without_a_checkpoint_starts_fresh(tmp_path):
    a = train(fresh_model(), regression_loader(), config(checkpoint_dir=tmp_path / "new"), resume=True)
    b = train(fresh_model(), regression_loader(), config())
    assert a.losses == b.losses


# ------------------------------------------------------------------ checkpoints


def test_checkpoint_round_trip_with_tied_weights(tmp_path):
    torch.manual_seed(0)
    model = TiedLM()
    ids = torch.randint(0, 50, (4, 6))
    hist = train(model, [{"input_ids": ids, "labels": ids, "attention_mask": torch.ones_like(ids)}],
                 config(max_steps=3))
    opt = make_optimizer(model, 1e-3)
    sched = linear_warmup_decay(opt, 1, 10)
    model(ids, ids).loss.backward()
    opt.step(), sched.step()
    path = save_checkpoint(tmp_path / "ck", model, opt, sched, step=5, history=hist,
                           extra={"note": "hi", "table": torch.arange(3), "nested": {"x": [1, 2.5]}})

    # the tied matrix is stored once, and nothing is a pickle
    stored = load_file(path / "model.safetensors")
    assert ("word_embeddings.weight" in stored) != ("decoder.weight" in stored)
    assert sorted(p.name for p in path.iterdir()) == ["checkpoint.json", "model.safetensors",
                                                      "training_state.json", "training_state.safetensors"]
    json.loads((path / "training_state.json").read_text())
    manifest = json.loads((path / "checkpoint.json").read_text())  # each file's sha256, checked on load
    assert sorted(manifest["files"]) == ["model.safetensors", "training_state.json", "training_state.safetensors"]

    torch.manual_seed(1)
    fresh = TiedLM()
    opt2 = make_optimizer(fresh, 1e-3)
    sched2 = linear_warmup_decay(opt2, 1, 10)
    info = load_checkpoint(path, fresh, opt2, sched2)
    assert fresh.decoder.weight is fresh.word_embeddings.weight  # still tied
    for k, v in model.state_dict().items():
        assert torch.equal(v, fresh.state_dict()[k])
    assert info["step"] == 5 and info["history"].losses == hist.losses
    assert info["extra"]["note"] == "hi" and torch.equal(info["extra"]["table"], torch.arange(3))
    assert info["extra"]["nested"] == {"x": [1, 2.5]}
    assert sched2.get_last_lr() == sched.get_last_lr()
    assert opt2.param_groups[0]["betas"] == (0.9, 0.999)
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert s1 and s1.keys() == s2.keys()  # the loop below checks something
    for i in s1:
        for k in s1[i]:
            assert torch.equal(torch.as_tensor(s1[i][k]), torch.as_tensor(s2[i][k]))


def test_checkpoint_mismatch_names_the_tensors(tmp_path):
    save_checkpoint(tmp_path / "ck", Regressor(d_hidden=32))
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(tmp_path / "ck", Regressor(d_hidden=16))
    msg = str(err.value)
    assert "dense.weight: checkpoint (32, 8) vs model (16, 8)" in msg and "shape mismatches" in msg

    class Bigger(Regressor):
        def __init__(self):
            super().__init__()
            self.extra_head = nn.Linear(2, 2)

    with pytest.raises(CheckpointMismatchError, match="extra_head.weight"):
        load_checkpoint(tmp_path / "ck", Bigger())
    save_checkpoint(tmp_path / "big", Bigger())
    with pytest.raises(CheckpointMismatchError, match="in the checkpoint but not in the model"):
        load_checkpoint(tmp_path / "big", Regressor())
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nothing", Regressor())


def test_a_crash_while_saving_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    model = Regressor()
    save_checkpoint(tmp_path / "ck", model, step=1)
    before = (tmp_path / "ck" / "model.safetensors").read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "st_save", boom)
    with torch.no_grad():
        model.out.bias.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "ck", model, step=2)
    assert (tmp_path / "ck" / "model.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]  # no temporary directory left behind


# ------------------------------------------------------------------ bad input


def test_bad_input_gets_clear_errors():
    with pytest.raises(ValueError, match="max_steps"):
        TrainConfig(lr=1e-3)
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=0, max_steps=1)
    with pytest.raises(ValueError, match="amp"):
        TrainConfig(lr=1e-3, max_steps=1, amp="fp8")
    with pytest.raises(ValueError, match="checkpoint_dir"):
        TrainConfig(lr=1e-3, max_steps=1, checkpoint_every=5)
    with pytest.raises(TypeError, match="one-shot iterator"):
        train(fresh_model(), (b for b in []), config())
    with pytest.raises(TypeError, match="has no length"):
        train(fresh_model(), lambda: iter([]), config(max_steps=None, epochs=1))
    with pytest.raises(ValueError, match="no batches"):
        train(fresh_model(), [], config())
    with pytest.raises(TypeError, match="dict of tensors"):
        train(fresh_model(), [(torch.randn(2, 8), torch.randn(2))], config())
    with pytest.raises(ValueError, match="no scalar .loss"):
        train(fresh_model(), [{"x": torch.randn(2, 8)}], config())
    with pytest.raises(ValueError, match="resume=True needs"):
        train(fresh_model(), regression_loader(), config(), resume=True)
    frozen = fresh_model().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train(frozen, regression_loader(), config())
    with pytest.raises(FloatingPointError, match="lower lr"):
        train(fresh_model(), [{"x": torch.full((2, 8), float("nan")), "y": torch.zeros(2)}], config())


# ------------------------------------------------------------------ with the book's own BERT


def test_tiny_bertmini_pretraining_resumes_exactly(tmp_path):
    from bertmini.config import BertConfig
    from bertmini.heads import BertForPreTraining

    cfg = BertConfig.preset("tiny", vocab_size=60, hidden_size=32, num_attention_heads=2, intermediate_size=64,
                            num_hidden_layers=2, max_position_embeddings=16)
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(5, 60, (24, 12), generator=g)
    nsp = torch.randint(0, 2, (24,), generator=g)

    def mask_collate(items):  # dynamic masking: 15% of positions, fresh each time a batch is drawn
        input_ids = torch.stack([i[0] for i in items])
        chosen = torch.rand(input_ids.shape) < 0.15
        chosen[:, 0] = True  # at least one masked position per row
        return {"input_ids": torch.where(chosen, torch.full_like(input_ids, 4), input_ids),
                "attention_mask": torch.ones_like(input_ids), "token_type_ids": torch.zeros_like(input_ids),
                "labels": torch.where(chosen, input_ids, torch.full_like(input_ids, -100)),
                "next_sentence_label": torch.stack([i[1] for i in items])}

    def loader():
        return DataLoader(TensorDataset(ids, nsp), batch_size=8, shuffle=True, collate_fn=mask_collate)

    def model():
        torch.manual_seed(0)
        return BertForPreTraining(cfg)  # dropout 0.1 on, as in BERT

    run = dict(max_steps=8, log_every=2, lr=1e-3)
    full_model = model()
    full = train(full_model, loader(), config(**run))
    train(model(), loader(), config(**run, checkpoint_dir=tmp_path), callbacks=[lambda i: i["step"] == 3])
    resumed_model = model()
    resumed = train(resumed_model, loader(), config(**run, checkpoint_dir=tmp_path), resume=True)
    for k, v in full_model.state_dict().items():
        assert torch.equal(v, resumed_model.state_dict()[k]), k
    assert resumed.losses == full.losses
    assert {"mlm_loss", "nsp_loss", "mlm_accuracy", "nsp_accuracy"} <= set(full.records[-1])
    assert full.records[0]["tokens"] == 8 * 12
    # the decoder tied to the word embeddings is stored once and comes back tied
    stored = load_file(tmp_path / "last" / "model.safetensors")
    assert "bert.embeddings.word_embeddings.weight" in stored and "cls.predictions.decoder.weight" not in stored
    fresh = model()
    load_checkpoint(tmp_path / "last", fresh)
    assert fresh.cls.predictions.decoder.weight is fresh.bert.embeddings.word_embeddings.weight
    assert torch.equal(fresh.cls.predictions.decoder.weight, full_model.bert.embeddings.word_embeddings.weight)
