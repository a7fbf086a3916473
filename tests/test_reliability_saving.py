"""Saving and resuming, made safe (issue 14, items 1, 2, 4, 5, 6, 7, 10 and the warmup part of 12).

Crashes are simulated the way a kill or a full disk looks to the code: from the n-th file
operation of a save on (each write, rename and delete counts), every one raises ``Killed``, so
nothing after that point runs, not even a cleanup handler. Then we look at what is on disk and
at what loads.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bertmini import checkpoint
from bertmini.checkpoint import (JOURNAL_FILE, CheckpointMismatchError, CorruptCheckpointError, load_checkpoint,
                                 rng_state, save_checkpoint)
from bertmini.config import BertConfig
from bertmini.finetuning import load_finetuned, save_finetuned
from bertmini.history import History
from bertmini.task_heads import BertForSequenceClassification
from bertmini.tokenization import BertTokenizer
from bertmini.train import TrainConfig, make_optimizer, train

torch.set_num_threads(1)

CHECKPOINT_FILES = ["checkpoint.json", "model.safetensors", "training_state.json", "training_state.safetensors"]


class Killed(BaseException):
    """The process died here."""


class Kill:
    """Patch every write, rename and delete; once ``armed``, the ``n``-th one and all after it die
    (a write dies with half its bytes on disk). ``count`` is how many ran armed; ``commit`` is the
    number of the rename that commits a save (the journal put in place)."""

    def __init__(self, n: int, armed: bool = True):
        self.n, self.armed, self.count, self.commit = n, armed, 0, None

    def _tick(self) -> bool:
        if self.armed:
            self.count += 1
        return self.armed and self.count >= self.n

    def __enter__(self) -> "Kill":
        self.mp = pytest.MonkeyPatch()
        real_write = checkpoint._write_file

        def write(path, data):
            if self._tick():
                if self.count == self.n:
                    Path(path).write_bytes(data[: len(data) // 2])
                raise Killed
            real_write(path, data)

        def wrap(name):
            real = getattr(os, name)

            def op(*args, **kwargs):
                if self._tick():
                    raise Killed
                if name == "replace" and str(args[1]).endswith(JOURNAL_FILE) and self.armed and not self.commit:
                    self.commit = self.count
                return real(*args, **kwargs)
            return op

        self.mp.setattr(checkpoint, "_write_file", write)
        for name in ("replace", "unlink", "rmdir"):
            self.mp.setattr(os, name, wrap(name))
        return self

    def __exit__(self, *exc) -> None:
        self.mp.undo()


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ------------------------------------------------------------------ a tiny training run


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.dense = nn.Linear(4, 8)
        self.dropout = nn.Dropout(0.2)  # draws random numbers: resume must restore them exactly
        self.out = nn.Linear(8, 1)

    def forward(self, x, y):
        return {"loss": ((self.out(self.dropout(torch.tanh(self.dense(x)))).squeeze(-1) - y) ** 2).mean()}


def net() -> Net:
    torch.manual_seed(0)
    return Net()


def batches(n: int = 5) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [{"x": torch.randn(4, 4, generator=g), "y": torch.randn(4, generator=g)} for _ in range(n)]


def config(**changes) -> TrainConfig:
    return TrainConfig(**{"lr": 1e-2, "max_steps": 6, "amp": None, "progress": False, "log_every": 2,
                          **changes})


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_killed_at_any_file_operation_of_a_save_training_resumes_from_the_newest_complete_checkpoint(tmp_path):
    reference = net()
    train(reference, batches(), config())
    counting = Kill(10**9, armed=False)

    def arm_at_step_4(info):  # count the save of step 4 only: the one that dies (step 2's is complete)
        counting.armed = info["step"] == 4

    with counting:
        train(net(), batches(), config(checkpoint_every=2, checkpoint_dir=tmp_path / "count"),
              callbacks=[arm_at_step_4])
    assert counting.count > 0
    for n in range(1, counting.count + 1):
        run = tmp_path / f"kill{n}"
        kill = Kill(n, armed=False)
        with kill, pytest.raises(Killed):
            train(net(), batches(), config(checkpoint_every=2, checkpoint_dir=run),
                  callbacks=[lambda info, k=kill: setattr(k, "armed", info["step"] == 4 or k.armed)])
        newest = 4 if counting.commit is not None and n > counting.commit else 2  # after the commit: the new one
        before = listing(run / "last")
        assert load_checkpoint(run, net())["step"] == newest, n
        assert listing(run / "last") == before  # loading changed nothing (a read-only folder works too)

        resumed = net()
        history = train(resumed, batches(), config(checkpoint_every=2, checkpoint_dir=run), resume=True)
        assert history.steps == [1, 2, 3, 4, 5, 6], n
        for k, v in weights(reference).items():
            assert torch.equal(v, resumed.state_dict()[k]), (n, k)
        assert listing(run) == ["last"] and listing(run / "last") == CHECKPOINT_FILES, n  # no orphans left


def test_a_run_killed_by_an_earlier_version_between_its_two_renames_resumes(tmp_path):
    # earlier versions swapped in a new folder: last -> .last.old-*, then .last.*.tmp -> last
    part = net()
    train(part, batches(), config(checkpoint_dir=tmp_path), callbacks=[lambda info: info["step"] == 3])
    os.replace(tmp_path / "last", tmp_path / ".last.old-1-2")
    (tmp_path / ".last.abc.tmp").mkdir()
    resumed = net()
    history = train(resumed, batches(), config(checkpoint_dir=tmp_path), resume=True)
    assert history.steps == [1, 2, 3, 4, 5, 6] and len(history.records) == 6
    assert listing(tmp_path) == ["last"]
    reference = net()
    train(reference, batches(), config())
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in reference.state_dict().items())


# ------------------------------------------------------------------ a save writes only its own files


def tiny_classifier(seed: int) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = BertConfig.preset("tiny", vocab_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32, max_position_embeddings=16)
    return BertForSequenceClassification(cfg, num_labels=2)


TOKENIZER = BertTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "film"])


def test_saves_leave_other_files_alone_and_refuse_a_file_as_the_folder(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes")
    save_checkpoint(folder, net(), step=1)
    save_checkpoint(folder, net(), step=2)
    save_finetuned(folder, tiny_classifier(0), TOKENIZER, ["neg", "pos"])
    assert (folder / "notes.txt").read_text() == "my notes"
    assert load_finetuned(folder).labels == ["neg", "pos"]
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    for save in (lambda: save_checkpoint(a_file, net()),
                 lambda: save_finetuned(a_file, tiny_classifier(0), TOKENIZER, ["neg", "pos"])):
        with pytest.raises(NotADirectoryError, match="it is a file, not a folder"):
            save()
        assert a_file.read_text() == "keep me"


def test_save_pretrained_leaves_other_files_alone(tmp_path):
    from bertmini import pretraining as P
    from bertmini.heads import BertForPreTraining

    torch.manual_seed(0)
    model = BertForPreTraining(tiny_classifier(0).config)
    run = P.PretrainRun(model, TOKENIZER, History(), P.recipe("smoke"), {"mlm_accuracy": 0.5})
    (tmp_path / "notes.txt").write_text("mine")
    P.save_pretrained(run, tmp_path)
    P.save_pretrained(run, tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    loaded, tokenizer, _, results = P.load_saved(tmp_path)
    assert tokenizer.ids_to_tokens == TOKENIZER.ids_to_tokens and results == {"mlm_accuracy": 0.5}
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())


def test_saved_files_get_the_umask_mode_not_tempfiles_0600(tmp_path):
    old = os.umask(0o022)
    try:
        save_finetuned(tmp_path / "clf", tiny_classifier(0), TOKENIZER, ["neg", "pos"])
    finally:
        os.umask(old)
    assert {oct(p.stat().st_mode & 0o777) for p in (tmp_path / "clf").iterdir()} == {"0o644"}


# ------------------------------------------------------------------ save_finetuned: all or nothing


def test_a_killed_save_finetuned_loads_the_old_save_or_the_new_one_whole(tmp_path):
    old_model, new_model = tiny_classifier(0), tiny_classifier(1)
    counting = Kill(10**9)
    with counting:
        save_finetuned(tmp_path / "count", new_model, TOKENIZER, ["bad", "good"])
    for n in range(1, counting.count + 1):
        folder = tmp_path / f"kill{n}"
        save_finetuned(folder, old_model, TOKENIZER, ["neg", "pos"])
        (folder / "notes.txt").write_text("mine")
        with Kill(n), pytest.raises(Killed):
            save_finetuned(folder, new_model, TOKENIZER, ["bad", "good"])
        committed = counting.commit is not None and n > counting.commit
        expected, labels = (new_model, ["bad", "good"]) if committed else (old_model, ["neg", "pos"])
        before = listing(folder)
        loaded = load_finetuned(folder)
        assert listing(folder) == before  # reading changed nothing
        assert loaded.labels == labels, n
        assert all(torch.equal(v, loaded.model.state_dict()[k]) for k, v in expected.state_dict().items()), n
        save_finetuned(folder, old_model, TOKENIZER, ["neg", "pos"])  # the next save clears what the kill left
        assert listing(folder) == ["checkpoint.json", "config.json", "labels.json", "model.safetensors",
                                   "notes.txt", "vocab.txt"], n


# ------------------------------------------------------------------ a non-finite loss stops at its step


def test_a_nan_loss_stops_at_its_step_with_the_weights_of_the_step_before():
    data = batches()
    data[2] = {"x": torch.full((4, 4), float("nan")), "y": torch.zeros(4)}  # the third step's batch
    model = net()
    with pytest.raises(FloatingPointError, match=r"at step 3: lower lr") as err:
        train(model, data, config(log_every=10))
    two_steps = net()
    train(two_steps, data, config(), callbacks=[lambda info: info["step"] == 2])  # the same schedule, stopped
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())
    for k, v in two_steps.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k
    assert "the model holds the weights of step 2" in str(err.value)


# ------------------------------------------------------------------ load_checkpoint checks first


def test_load_checkpoint_checks_everything_before_changing_anything(tmp_path):
    saved = net()
    save_checkpoint(tmp_path / "ck", saved, make_optimizer(saved, 1e-3), step=1)
    other = net()
    with torch.no_grad():
        other.dense.weight.add_(1.0)
    other.dense.weight.requires_grad_(False)  # same two groups, but the first holds one tensor fewer
    optimizer = make_optimizer(other, 1e-3)
    before, opt_before = weights(other), optimizer.state_dict()
    with pytest.raises(CheckpointMismatchError, match=r"ck: the saved optimizer has parameter groups of \[2, 2\] "
                                                      r"tensors, this optimizer \[1, 2\].*the same ones frozen"):
        load_checkpoint(tmp_path / "ck", other, optimizer)
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in before.items())
    assert optimizer.state_dict() == opt_before
    scheduler = torch.optim.lr_scheduler.StepLR(make_optimizer(net(), 1e-3), 1)
    with pytest.raises(ValueError, match="without a scheduler state"):
        load_checkpoint(tmp_path / "ck", net(), scheduler=scheduler)


# ------------------------------------------------------------------ a folder that cannot be written


def test_an_unwritable_checkpoint_dir_fails_before_the_first_step(tmp_path, monkeypatch):
    steps = []
    (tmp_path / "a_file").write_text("")
    with pytest.raises(OSError, match=f"cannot write {tmp_path / 'a_file'}.*checkpoint_dir"):
        train(net(), batches(), config(checkpoint_dir=tmp_path / "a_file" / "ck"), callbacks=[steps.append])

    def refuse(path, data):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(checkpoint, "_write_file", refuse)  # as a read-only folder answers a non-root user
    with pytest.raises(PermissionError, match=f"cannot write {tmp_path / 'ro'}.*checkpoint_dir"):
        train(net(), batches(), config(checkpoint_dir=tmp_path / "ro"), callbacks=[steps.append])
    assert steps == []


# ------------------------------------------------------------------ damaged files are named, never loaded


def damage(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x70
    path.write_bytes(bytes(data))


def test_damaged_checkpoints_name_the_file_and_the_fix(tmp_path):
    saved = net()
    folder = tmp_path / "ck"
    save_checkpoint(folder, saved, make_optimizer(saved, 1e-3), step=1)
    pristine = {p.name: p.read_bytes() for p in folder.iterdir()}

    def restore():
        for name, data in pristine.items():
            (folder / name).write_bytes(data)

    damage(folder / "model.safetensors", -2)  # a flipped bit inside a weight: still a valid file
    with pytest.raises(CorruptCheckpointError, match=r"model.safetensors is damaged.*sha256.*delete .*ck"):
        load_checkpoint(folder, net())
    restore()
    (folder / "training_state.json").write_text("{garbage")
    with pytest.raises(CorruptCheckpointError, match="training_state.json is damaged"):
        load_checkpoint(folder, net())
    restore()
    (folder / "checkpoint.json").write_text("[")
    with pytest.raises(CorruptCheckpointError, match=r"checkpoint.json \(the list of saved files.*delete"):
        load_checkpoint(folder, net())
    restore()
    (folder / "training_state.safetensors").unlink()
    with pytest.raises(CorruptCheckpointError, match="training_state.safetensors is missing, though"):
        load_checkpoint(folder, net())


def test_folders_saved_before_manifests_still_load_and_name_a_damaged_file(tmp_path):
    saved = net()
    folder = tmp_path / "old"
    save_checkpoint(folder, saved, step=3)
    (folder / "checkpoint.json").unlink(missing_ok=True)  # as bertmini wrote checkpoints before this change
    fresh = net()
    with torch.no_grad():
        fresh.out.bias.add_(1.0)
    assert load_checkpoint(folder, fresh)["step"] == 3
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in saved.state_dict().items())
    (folder / "training_state.json").write_text("{garbage")
    with pytest.raises(CorruptCheckpointError, match=r"training_state.json is not valid JSON.*delete"):
        load_checkpoint(folder, net())
    (folder / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes()[:20])
    with pytest.raises(CorruptCheckpointError, match=r"model.safetensors is not a readable safetensors file.*delete"):
        load_checkpoint(folder, net())


def test_a_damaged_finetuned_model_is_named(tmp_path):
    save_finetuned(tmp_path, tiny_classifier(0), TOKENIZER, ["neg", "pos"])
    (tmp_path / "labels.json").write_text(json.dumps({"labels": ["pos", "neg"], "max_length": 128}))
    with pytest.raises(CorruptCheckpointError, match="labels.json is damaged"):
        load_finetuned(tmp_path)


def test_saving_and_loading_draw_no_random_numbers(tmp_path):
    model = net()
    torch.manual_seed(5)
    before = rng_state()
    save_checkpoint(tmp_path / "ck", model, make_optimizer(model, 1e-3), step=1)
    load_checkpoint(tmp_path / "ck", model)
    after = rng_state()
    assert torch.equal(before["torch"], after["torch"]) and before["python"] == after["python"]
    assert all(np.array_equal(a, b) for a, b in zip(before["numpy"], after["numpy"]))


# ------------------------------------------------------------------ warmup longer than the run


def test_warmup_longer_than_the_run_is_an_error_or_a_warning():
    with pytest.raises(ValueError, match=r"warmup_steps=50 is more than max_steps=6.*Lower warmup_steps"):
        TrainConfig(lr=1e-3, max_steps=6, warmup_steps=50)
    by_epochs = TrainConfig(lr=1e-3, epochs=1, warmup_steps=50)
    with pytest.warns(UserWarning, match="warmup_steps=50 is more than the 5 steps"):
        assert by_epochs.warmup(by_epochs.total_steps(batches())) == 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert TrainConfig(lr=1e-3, max_steps=6, warmup_steps=6).warmup(6) == 6
