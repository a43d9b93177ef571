"""The draft's lm_head and the soft cross-entropy against the base's distribution, fused and chunked.

Written plainly, the loss over R trained rows builds several [R, draft vocab] fp32 tensors (logits,
log-probabilities, gathered targets and the gradients of each): at the CPU recipe's 5,000 rows x
12k words that is 240 MB apiece, and on CPUs such short-lived giants cost more to allocate and
page in than to compute. Here the rows go through in chunks of at most `chunk` logits: each chunk's
logits, loss and logit gradient (softmax - target) are made and dropped in turn, and the gradients
of the lm_head's input and weight are finished in the forward pass, as the loss is a weighted sum
of rows whose weights are known then; they are kept in float32, and backward only scales them
(by the loss's gradient, an fp16 loss scale included). The same loss and gradients as autograd
through `log_softmax` (tests/test_train_ttt.py), the products in `compute_dtype` (the autocast
dtype) like the plain lm_head's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class _LinearSoftCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, target_p, rows, target_idx, row_weight, chunk, compute_dtype, row_multiple,
                need_grad):
        r = hidden.shape[0]
        w = weight.to(compute_dtype)
        ce = torch.empty(r, dtype=torch.float32, device=hidden.device)
        hit = torch.empty(r, dtype=torch.bool, device=hidden.device)
        # The row weights (0.8**j / a global count) are ~1e-4: applied before an fp16 product they
        # would underflow it, so the products see them relative to the largest, which is applied in fp32.
        unit = row_weight.max().clamp(min=torch.finfo(torch.float32).tiny) if r else row_weight.new_ones(())
        rel = row_weight / unit
        grad_h = torch.empty(hidden.shape, dtype=torch.float32, device=hidden.device) if need_grad else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_grad else None
        step = max(row_multiple, chunk // weight.shape[0] // row_multiple * row_multiple)
        with torch.autocast(hidden.device.type, enabled=False):
            for i in range(0, r, step):
                c = min(step, r - i)
                # a short last chunk is padded to a multiple of row_multiple rows (fewer matmul shapes
                # for oneDNN to compile, eagle.train.dataset.SHAPE_MULTIPLE); a zero target row has no
                # mass, so it adds no loss and no gradient
                pad = -c % row_multiple
                h = F.pad(hidden[i:i + c].to(compute_dtype), (0, 0, 0, pad))
                z = (h @ w.T).float()  # [c + pad, Vd] logits
                p = F.pad(target_p[rows[i:i + c]], (0, 0, 0, pad))  # [c + pad, Vd] the base's distribution
                lse = torch.logsumexp(z, -1, keepdim=True)
                mass = p.sum(-1, keepdim=True)  # 1 up to rounding; kept so the loss is exactly -sum p log q
                ce[i:i + c] = ((lse * mass).squeeze(-1) - (p * z).sum(-1))[:c]
                hit[i:i + c] = z[:c].argmax(-1) == target_idx[rows[i:i + c]]
                if need_grad:  # d ce / d z = mass * softmax(z) - p, times the row's (relative) weight
                    g = z.sub_(lse).exp_().mul_(mass).sub_(p).mul_(F.pad(rel[i:i + c, None], (0, 0, 0, pad)))
                    g = g.to(compute_dtype)
                    grad_h[i:i + c] = (g @ w)[:c]
                    if g.dtype == torch.float32:
                        grad_w.addmm_(g.T, h)  # in place: no [Vd, H] temporary per chunk
                    else:
                        grad_w += (g.T @ h).float()
        ctx.mark_non_differentiable(ce, hit)
        if need_grad:
            ctx.save_for_backward(grad_h, grad_w, unit)
            ctx.dtypes = hidden.dtype, weight.dtype
        return (ce * row_weight).sum(), ce, hit

    @staticmethod
    def backward(ctx, grad_loss, _ce, _hit):
        grad_h, grad_w, unit = ctx.saved_tensors
        scale = grad_loss.float() * unit  # in fp32: an fp16 loss scale reaches the tiny weights here
        return (grad_h * scale).to(ctx.dtypes[0]), (grad_w * scale).to(ctx.dtypes[1]), *[None] * 8


def linear_soft_ce(hidden: torch.Tensor, weight: torch.Tensor, target_p: torch.Tensor, rows: torch.Tensor,
                   target_idx: torch.Tensor, row_weight: torch.Tensor, chunk: int = 2 ** 23,
                   compute_dtype: torch.dtype | None = None, row_multiple: int = 1):
    """Soft cross-entropy of `softmax(hidden @ weight.T)` against `target_p[rows]`.

    hidden [R, H] (the lm_head's input), weight [Vd, H], target_p [N, Vd] float32, rows [R] (which
    target row each hidden row is scored against), target_idx [N] (the target's argmax),
    row_weight [R] float32. Chunks hold a multiple of `row_multiple` rows, the last one padded.
    Returns (sum of row_weight * ce, with gradients to hidden and weight; ce [R]; hit [R] = the
    logits' argmax is target_idx[rows]), the last two without gradients."""
    need_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    return _LinearSoftCE.apply(hidden, weight, target_p, rows, target_idx, row_weight.float(), chunk,
                               compute_dtype or weight.dtype, row_multiple, need_grad)
