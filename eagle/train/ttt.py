"""The EAGLE-3 objective: training-time test (TTT) against the base's own distribution.

arXiv 2503.01840 §3.2, and DESIGN.md §2. For origin position t and TTT step j (0 <= j < K):

    input      step 0: the base feature f_t; step j > 0: the draft's own output h_{t, j-1}
               and the embedding of token x_{t+1+j} (the next token, shifted by j)
    position   t + j (RoPE), exactly where generation puts a depth-j node under the root at t
    attention  step-0 keys at positions <= t, plus the keys of steps 1..j at origin t only:
               the node's own ancestors, what the tree drafter sees at inference
    target     p = the base's softmax at position t+1+j restricted to the draft vocabulary
               (renormalised), i.e. its distribution for x_{t+2+j}
    loss       soft cross-entropy  -sum_v p(v) log q_j(v), on positions whose token x_{t+2+j} is a
               loss token and whose base argmax lies in the draft vocabulary
    total      sum_j decay**j * (sum of the step's losses) / (the step's count over the global batch)

Dividing by the global count (all micro-batches of all processes of one optimizer step) makes the
gradient of a global batch independent of how it is split over processes and accumulation steps.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from eagle.model.draft import Eagle3Draft
from eagle.train.dataset import SHAPE_MULTIPLE, round_up
from eagle.train.soft_ce import linear_soft_ce


@dataclass
class BaseBatch:
    """What the frozen base says about one micro-batch (from the base online, or from the cache)."""

    input_ids: torch.Tensor  # [B, S] right-padded
    loss_mask: torch.Tensor  # [B, S] bool
    lengths: torch.Tensor  # [B]
    features: torch.Tensor  # [B, S, 3H] fused aux hidden states
    hidden: torch.Tensor  # [B, S, H] the lm_head's input (final normed hidden state)
    argmax: torch.Tensor  # [B, S] the base's greedy next token at each position


@dataclass
class TargetHead:
    """The base's lm_head restricted to the draft vocabulary: exact restricted logits from `hidden`.

    Logits of other tokens are never needed: the target is renormalised over the draft vocabulary,
    and whether the full argmax lies in it is read from `BaseBatch.argmax`.
    """

    weight: torch.Tensor  # [Vd, H] rows of the base lm_head at the draft vocabulary's target ids
    bias: torch.Tensor | None  # [Vd]
    softcap: float | None  # Gemma-2 style final logit soft-capping

    @classmethod
    def from_base(cls, base, target_ids: torch.Tensor) -> "TargetHead":
        head = base.get_output_embeddings()
        idx = target_ids.to(head.weight.device)
        bias = head.bias.detach()[idx].clone() if getattr(head, "bias", None) is not None else None
        cfg = getattr(base.config, "text_config", None) or base.config
        return cls(head.weight.detach()[idx].clone(), bias, getattr(cfg, "final_logit_softcapping", None))

    def log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """[N, H] -> [N, Vd] float32 log-probabilities over the draft vocabulary."""
        logits = F.linear(hidden.to(self.weight.dtype), self.weight, self.bias).float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return torch.log_softmax(logits, -1)

    def to(self, device) -> "TargetHead":
        return TargetHead(self.weight.to(device), None if self.bias is None else self.bias.to(device), self.softcap)


def base_lm_head_rows(base, head: TargetHead) -> torch.Tensor:
    """A starting lm_head for the draft: the base's rows for the draft vocabulary, with the scale of
    the base's final RMSNorm folded in. The draft's own norm starts at 1, so lm_head(norm(h)) is then
    the base's logits for the base's own pre-norm h: the draft starts in the base's output space
    instead of learning 12k-32k random rows from a few hundred steps of data."""
    weight = head.weight.float().clone()
    norm = getattr(base.get_decoder(), "norm", None)
    if norm is not None and "rmsnorm" in type(norm).__name__.lower():
        p = next(norm.parameters())
        with torch.no_grad():  # the RMSNorm of a ones vector is its scale (w, or 1 + w for Gemma)
            scale = norm(torch.ones(1, weight.shape[1], dtype=p.dtype, device=p.device)).float().flatten()
        weight *= scale.to(weight.device)
    return weight


@dataclass
class Prepared:
    """One micro-batch, ready for the draft. N = number of trained target positions."""

    features: torch.Tensor  # [B, S, 3H]
    embeds: torch.Tensor  # [B, S, H] embeddings of x_0..x_{S-1}
    valid: torch.Tensor  # [B, S] bool: target position p is trained (see module docstring)
    target_p: torch.Tensor | None  # [N, Vd] float32 base distribution over the draft vocabulary
    target_idx: torch.Tensor  # [N] draft id of the base argmax
    hidden_valid: torch.Tensor  # [N, H] lm_head inputs, kept until target_p is needed
    tokens: int  # real tokens in the micro-batch
    draft_ids: torch.Tensor  # [B, S] draft id of each input token, -1 outside the draft vocabulary


def prepare(batch: BaseBatch, embed_weight: torch.Tensor, t2d: torch.Tensor, device,
            context: bool = False) -> Prepared:
    """Masks and targets of a micro-batch (no gradients). `t2d` is the draft's bool [V] mask.

    `context` also trains the positions the loss mask leaves out (prompts, FIM prefix and suffix):
    the base's distribution is a target there as much as in an answer, and the features are paid for."""
    ids, lm, lengths = batch.input_ids.to(device), batch.loss_mask.to(device), batch.lengths.to(device)
    argmax = batch.argmax.to(device).long()
    b, s = ids.shape
    pos = torch.arange(s, device=device)
    # target position p predicts x_{p+1}: it needs p+1 inside the sample and (without context) a loss token there
    nxt = torch.zeros_like(lm)
    nxt[:, :-1] = lm[:, 1:]
    valid = (pos[None, :] + 1 < lengths[:, None]) & t2d.to(device)[argmax]
    if not context:
        valid &= nxt
    draft_index = torch.cumsum(t2d.to(device).long(), 0) - 1  # base id -> draft id where t2d holds
    with torch.no_grad():
        embeds = F.embedding(ids, embed_weight.to(device))
    return Prepared(
        features=batch.features.to(device), embeds=embeds, valid=valid, target_p=None,
        target_idx=draft_index[argmax[valid]], hidden_valid=batch.hidden.to(device)[valid],
        tokens=int(lengths.sum()), draft_ids=torch.where(t2d.to(device)[ids], draft_index[ids], -1))


def step_counts(valid: torch.Tensor, ttt_length: int) -> torch.Tensor:
    """[K] number of trained origins at each TTT step: step j trains origin t when p = t+1+j is valid."""
    return torch.stack([valid[:, 1 + j:].sum() for j in range(ttt_length)])


def _shift(x: torch.Tensor, k: int) -> torch.Tensor:
    """x[:, k:] padded back to length S with zeros at the end (dim 1)."""
    out = torch.zeros_like(x)
    if k < x.shape[1]:
        out[:, : x.shape[1] - k] = x[:, k:]
    return out


@dataclass
class Step:
    j: int
    hidden: torch.Tensor  # [B, M, H] the draft's output at step j
    origin: torch.Tensor  # [B, M] origin position t of each row (step 0: every position)
    real: torch.Tensor  # [B, M] bool, False for padding rows of the subset


def ttt_unroll(draft: Eagle3Draft, features: torch.Tensor, embeds: torch.Tensor, ttt_length: int,
               need: torch.Tensor | None = None):
    """Yield the draft's outputs of steps 0..K-1.

    Step 0 runs over every position (its keys are everyone's context). Steps j >= 1 run only for
    the origins in `need` ([B, S] bool, default all): a chain whose targets are never trained
    (prompt, FIM context) costs nothing past step 0. Per sample the needed origins are packed to
    the front and padded to the batch's largest count M; a step-j row attends the step-0 keys at
    positions <= its origin and the rows of steps 1..j with the same index (its own chain).
    """
    b, s, _ = features.shape
    dev = features.device
    pos = torch.arange(s, device=dev)[None].expand(b, s)
    out = draft(features, _shift(embeds, 1), pos)  # step 0: causal over the whole sequence
    yield Step(0, out.hidden, pos, torch.ones(b, s, dtype=torch.bool, device=dev))
    if ttt_length < 2 or s < 3:
        return
    need = torch.ones(b, s, dtype=torch.bool, device=dev) if need is None else need
    counts = need.sum(1)  # [B]
    m = min(round_up(max(int(counts.max()), 1)), s)  # padded rows are not `real`
    origin = torch.sort((~need).to(torch.int8), dim=1, stable=True).indices[:, :m]  # needed first, ascending
    real = torch.arange(m, device=dev)[None] < counts[:, None]  # [B, M]
    gather = lambda x, idx: x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))  # noqa: E731
    h = gather(out.hidden, origin)  # [B, M, H]
    past_k, past_v = [out.key], [out.value]  # step 0: [B, n_kv, S, hd]
    context = (origin[:, :, None] >= torch.arange(s, device=dev)[None, None])[:, None]  # [B, 1, M, S]
    own = torch.eye(m, dtype=torch.bool, device=dev).expand(b, 1, m, m)
    for j in range(1, min(ttt_length, s - 1)):
        tokens = gather(embeds, (origin + 1 + j).clamp(max=s - 1))  # x_{t+1+j}: [B, M, H]
        mask = torch.cat([context] + [own] * j, -1)  # [B, 1, M, S + j*M]
        out = draft(h, tokens, origin + j, past_kv=(torch.cat(past_k, 2), torch.cat(past_v, 2)), mask=mask)
        past_k.append(out.key)
        past_v.append(out.value)
        h = out.hidden
        yield Step(j, h, origin, real)


@dataclass
class TTTStats:
    loss: torch.Tensor  # scalar, the weighted objective of this micro-batch (with gradients)
    ploss_sum: torch.Tensor  # [K] summed soft cross-entropy per step (detached, float64)
    correct: torch.Tensor  # [K] draft argmax == base argmax
    count: torch.Tensor  # [K] trained positions


class TTTObjective(nn.Module):
    """The draft plus its loss, one forward per micro-batch (so DDP and DeepSpeed wrap one call)."""

    def __init__(self, draft: Eagle3Draft, ttt_length: int = 7, decay: float = 0.8,
                 autocast_dtype: torch.dtype | None = None, logit_chunk: int = 2 ** 23, align_top_k: int = 0):
        super().__init__()
        self.draft = draft
        self.ttt_length, self.decay = ttt_length, decay
        # Token-alignable training (GRIFFIN, arXiv 2502.11018): a chain is trained at step j only while
        # every earlier step ranked the token it is fed next among its `align_top_k` likeliest, as a
        # tree of top-k children would have reached it; 0 trains every chain.
        self.align_top_k = align_top_k
        self.autocast_dtype = autocast_dtype
        # Most elements of a [rows, draft vocab] logit tensor held at once: the lm_head and loss run
        # over the rows in chunks of this size (eagle.train.soft_ce): 699 rows at 12k words, 262 at 32k.
        self.logit_chunk = logit_chunk

    @torch.no_grad()
    def _in_top_k(self, hidden: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
        """[R, H] draft outputs, [R] draft ids (-1: outside the vocabulary) -> [R] bool: `want` is among
        the draft's align_top_k likeliest tokens (ties count as in)."""
        out = torch.zeros(want.shape, dtype=torch.bool, device=want.device)
        step = max(1, self.logit_chunk // self.draft.lm_head.weight.shape[0])
        for i in range(0, want.numel(), step):
            z = self.draft.logits(hidden[i:i + step])
            w = want[i:i + step]
            above = (z > z.gather(1, w.clamp(min=0)[:, None])).sum(1)
            out[i:i + step] = (above < self.align_top_k) & (w >= 0)
        return out

    def forward(self, features, embeds, valid, target_p, target_idx, denom, draft_ids=None) -> TTTStats:
        """`draft_ids` ([B, S], Prepared.draft_ids) turns on align_top_k; without them (evaluation)
        every chain is scored."""
        k, dev = self.ttt_length, features.device
        b, s = valid.shape
        param = next(self.draft.parameters())
        if self.autocast_dtype is not None:
            ctx = torch.autocast(dev.type, dtype=self.autocast_dtype)
        else:
            ctx = contextlib.nullcontext()
            features, embeds = features.to(param.dtype), embeds.to(param.dtype)
        row_of = torch.full((b, s + k + 1), -1, dtype=torch.long, device=dev)  # target row of position p
        row_of[:, :s][valid] = torch.arange(int(valid.sum()), device=dev)
        need = torch.zeros_like(valid)  # origins with a trained target at some step >= 1
        for j in range(1, k):
            need |= _shift(valid, 1 + j)
        align = bool(self.align_top_k) and draft_ids is not None
        alive = need.clone()  # [B, S] by origin: the chain is still aligned (with `align`)
        picked, rows, sizes = [], [], []
        with ctx:
            for st in ttt_unroll(self.draft, features, embeds, k, need):
                r = row_of.gather(1, st.origin + 1 + st.j)  # [B, M] target row of p = t+1+j, or -1
                keep = (r >= 0) & st.real
                if align and st.j > 0:
                    keep &= alive.gather(1, st.origin)
                picked.append(st.hidden[keep])
                rows.append(r[keep])
                sizes.append(rows[-1].numel())
                if align and st.j + 1 < k:  # the next step is fed x_{t+2+j}: did this one rank it top-k?
                    go = st.real & alive.gather(1, st.origin)
                    nxt = draft_ids.gather(1, (st.origin + 2 + st.j).clamp(max=s - 1))
                    hit = torch.zeros_like(go)
                    hit[go] = self._in_top_k(st.hidden[go], nxt[go])
                    alive.scatter_(1, st.origin, hit)  # a step's origins are distinct positions
            # the lm_head runs over all steps together, not once per step; a row of step j weighs
            # decay**j / (the step's count over the global batch)
            scale = self.decay ** torch.arange(len(sizes), device=dev) / denom[:len(sizes)].clamp(min=1)
            row_weight = torch.repeat_interleave(scale, torch.tensor(sizes, device=dev))
            ce_loss, ce, hit = linear_soft_ce(self.draft.norm(torch.cat(picked)), self.draft.lm_head.weight,
                                              target_p, torch.cat(rows), target_idx, row_weight,
                                              self.logit_chunk, self.autocast_dtype, SHAPE_MULTIPLE)
        loss = param.sum() * 0.0 + ce_loss  # the zero keeps every parameter in the graph, even with nothing to train
        ploss = torch.zeros(k, dtype=torch.float64, device=dev)
        correct = torch.zeros(k, dtype=torch.long, device=dev)
        count = torch.zeros(k, dtype=torch.long, device=dev)
        for j, (ce_j, hit_j) in enumerate(zip(ce.split(sizes), hit.split(sizes))):
            ploss[j], correct[j], count[j] = ce_j.sum().double(), hit_j.sum(), ce_j.numel()
        return TTTStats(loss, ploss, correct, count)
