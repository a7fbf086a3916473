"""The MLM loss without storing the logits: the fast twin of
``F.cross_entropy(F.linear(x, W, b), labels)``.

:mod:`bertmini.heads` uses it to train (train mode, autograd on, ``bertmini.fast.ENABLED``);
``tests/test_fast.py`` checks that loss, accuracy and the gradients of ``x``, ``W`` and
``b`` equal the plain version's, in float32 and under bf16 autocast.
"""
from __future__ import annotations

import torch

__all__ = ["LinearCrossEntropy", "masked_lm_loss"]


class LinearCrossEntropy(torch.autograd.Function):
    """``(mean cross-entropy of softmax(x W^T + b) against labels, top-1 accuracy)`` and,
    already in the forward pass, the loss's gradients, ``block`` vocabulary entries at a time.

    The same numbers as ``F.cross_entropy(F.linear(x, W, b), labels)`` under autograd,
    but the ``rows x vocab`` logits are never stored. Pass 1 goes through the
    vocabulary block by block and keeps, per row, a running maximum and sum of
    exponentials (so the logsumexp comes out exact), the label's logit and the best
    guess. Pass 2 computes each block's logits again: the gradient of the summed loss
    with respect to them is ``softmax - onehot(label)``, and it gives that block's
    share of the gradients of ``x``, ``W`` and ``b`` at once.

    Why: the ``rows x vocab`` logits are the largest tensor of a training step at a
    real vocabulary, and a product that writes them all is memory-bound on a CPU; a
    block of ``W`` stays in cache, and so does everything made from it, so the
    blocked version is faster even though the forward product is done twice
    (``bench/mlm_throughput.py`` measures it).
    ``x``, ``W`` and ``b`` come in one dtype (the caller casts them under autocast);
    the softmax runs in float32 and the gradients add up in float32.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, labels, block: int):
        rows, vocab = x.shape[0], weight.shape[0]
        f32 = dict(dtype=torch.float32, device=x.device)

        def logits(j):  # rows x block, float32
            return torch.addmm(bias[j:j + block], x, weight[j:j + block].t()).float()

        def labelled(j):  # the rows whose label lies in block j, and that label's column there
            r = ((labels >= j) & (labels < j + block)).nonzero()[:, 0]
            return r, labels[r] - j

        starts = range(0, vocab, block)
        label_cells = [labelled(j) for j in starts]
        run_max = torch.full((rows,), float("-inf"), **f32)  # also the best logit so far
        run_sum, label_logit = torch.zeros(rows, **f32), torch.zeros(rows, **f32)
        top_id = torch.zeros(rows, dtype=torch.long, device=x.device)
        for j, (r, c) in zip(starts, label_cells):  # pass 1: logsumexp, label logit, best guess
            z = logits(j)
            z_max, z_arg = z.max(1)
            better = z_max > run_max  # strict: on a tie the earlier block wins, as argmax does
            top_id = torch.where(better, z_arg + j, top_id)
            new_max = torch.maximum(run_max, z_max)
            run_sum = run_sum * (run_max - new_max).exp() + (z - new_max[:, None]).exp().sum(1)
            run_max = new_max
            label_logit[r] = z[r, c]
        logsumexp = run_max + run_sum.log()

        grad_x = torch.zeros(x.shape, **f32)
        grad_w, grad_b = torch.empty(weight.shape, **f32), torch.empty(bias.shape, **f32)
        for j, (r, c) in zip(starts, label_cells):  # pass 2: softmax - onehot, and the gradients
            d_logits = logits(j).sub_(logsumexp[:, None]).exp_()
            d_logits[r, c] -= 1.0
            grad_b[j:j + block] = d_logits.sum(0)
            d_logits = d_logits.to(x.dtype)  # bf16 under autocast, as autograd's backward would be
            grad_x += d_logits @ weight[j:j + block]
            grad_w[j:j + block] = d_logits.t() @ x
        ctx.save_for_backward(grad_x, grad_w, grad_b)
        ctx.rows, ctx.dtypes = rows, (x.dtype, weight.dtype, bias.dtype)
        accuracy = (top_id == labels).float().mean()
        ctx.mark_non_differentiable(accuracy)
        return (logsumexp - label_logit).mean(), accuracy

    @staticmethod
    def backward(ctx, grad_loss, _grad_accuracy):
        scale = grad_loss.float() / ctx.rows  # the loss is the mean over rows
        grads = [(g * scale).to(dtype) for g, dtype in zip(ctx.saved_tensors, ctx.dtypes)]
        return (*grads, None, None)


def masked_lm_loss(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                   labels: torch.Tensor, block: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, accuracy)`` of the MLM decoder through :class:`LinearCrossEntropy`, in the
    autocast dtype when autocast is on (as ``F.linear`` would run)."""
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
    with torch.autocast(device, enabled=False):
        return LinearCrossEntropy.apply(hidden.to(dtype), weight.to(dtype), bias.to(dtype), labels, block)
