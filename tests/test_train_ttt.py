"""The EAGLE-3 objective against plain references: TTT attention equals what the tree drafter sees,
the vectorised loss equals a per-position loop, targets equal the base's own softmax, the cache
equals the online features, the global-count loss does not depend on how a batch is split, and the
draft's lm_head starts as the base's."""

import math

import pytest
import torch
from tiny import tiny_base as tiny_arch_base

from eagle.model.config import DraftConfig
from eagle.model.draft import Eagle3Draft
from eagle.model.generate import fused_features
from eagle.train.config import TrainConfig
from eagle.train.dataset import SHAPE_MULTIPLE, Sample, build_vocab, pad_batch, vocab_coverage
from eagle.train.features import BaseRunner, FeatureCache, OnlineSource, StoredSource, base_fingerprint
from eagle.train.loop import Stepper
from eagle.train.soft_ce import linear_soft_ce
from eagle.train.tiny import tiny_base
from eagle.train.trainer import initial_draft
from eagle.train.ttt import TargetHead, TTTObjective, base_lm_head_rows, prepare, step_counts, ttt_unroll


@pytest.fixture(scope="module")
def base():
    return tiny_base(layers=4, hidden=64, vocab=264, seed=0)


def _draft(base, vd=64, seed=1):
    torch.manual_seed(seed)
    d = Eagle3Draft(DraftConfig.from_base(base.config, vd))
    for p in d.parameters():  # larger weights than the init, so attention patterns matter
        p.data.normal_(0, 0.2)
    return d.eval()


def _samples(n=3, lengths=(20, 14, 9), seed=0, density=0.7):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        L = lengths[i % len(lengths)]
        ids = torch.randint(0, 256, (L,), generator=g).tolist()
        mask = (torch.rand(L, generator=g) < density).long().tolist()
        out.append(Sample(ids, mask))
    return out


def test_ttt_attention_is_the_tree_drafters(base):
    """Step j at origin t = a chain drafted at inference: the prefix cache up to t, then the node's
    own ancestors, RoPE position t+j, fed its parent's hidden state and token x_{t+1+j}."""
    draft = _draft(base)
    s = _samples(1, (16,))[0]
    ids = torch.tensor([s.input_ids])
    emb = base.get_input_embeddings()
    with torch.no_grad():
        feats = fused_features(base(ids, output_hidden_states=True).hidden_states, draft.config.aux_layer_ids)
        embeds = emb(ids)
        steps = [st.hidden for st in ttt_unroll(draft, feats, embeds, 5)]  # every origin
        # reference: step 0 over the prompt, then one origin at a time, one node per call
        x1 = emb(ids[:, 1:])
        d0 = draft(feats[:, :-1], x1, torch.arange(15)[None])
        for t in (0, 3, 9, 11):
            h, past_k, past_v = d0.hidden[:, t:t + 1], d0.key[:, :, :t + 1], d0.value[:, :, :t + 1]
            assert torch.allclose(steps[0][:, t], h[:, 0], atol=1e-5)
            for j in range(1, 5):
                if t + 1 + j >= 16:
                    break
                out = draft(h, emb(ids[:, t + 1 + j:t + 2 + j]), torch.tensor([[t + j]]), past_kv=(past_k, past_v),
                            mask=torch.ones(1, 1, 1, past_k.shape[2] + 1, dtype=torch.bool))
                past_k, past_v = torch.cat([past_k, out.key], 2), torch.cat([past_v, out.value], 2)
                h = out.hidden
                assert torch.allclose(steps[j][:, t], h[:, 0], atol=1e-5), (t, j)


def _reference_loss(draft, base, samples, target_ids, k, decay, context=False, align=0):
    """Per sample, per origin, per step, by the definition in DESIGN.md §2 (`context`: every position
    is a target, not only those of the loss mask; `align`: a chain stops at the first step whose
    top-`align` misses the token it feeds the next step). Returns the loss, the trained rows per step,
    their correct counts, and the rows per step without `align` (each step's denominator)."""
    t2d = torch.zeros(base.config.vocab_size, dtype=torch.bool)
    t2d[target_ids] = True
    emb = base.get_input_embeddings()
    terms = [[] for _ in range(k)]
    correct, possible = [0] * k, [0] * k
    for s in samples:
        ids = torch.tensor([s.input_ids])
        L = ids.shape[1]
        with torch.no_grad():
            out = base(ids, output_hidden_states=True)
        base_p = torch.softmax(out.logits[0][:, target_ids].float(), -1)  # restricted, renormalised
        argmax = out.logits[0].argmax(-1)
        hs = [st.hidden for st in ttt_unroll(draft, fused_features(out.hidden_states, draft.config.aux_layer_ids),
                                             emb(ids), k)]
        for t in range(L):
            aligned = True
            for j in range(min(k, len(hs))):
                p = t + 1 + j
                logq = torch.log_softmax(draft.logits(hs[j][0, t]).float(), -1)
                if not (p + 1 >= L or not (context or s.loss_mask[p + 1]) or not t2d[argmax[p]]):
                    possible[j] += 1
                    if aligned:
                        terms[j].append(-(base_p[p] * logq).sum())
                        correct[j] += int(target_ids[logq.argmax()] == argmax[p])
                if align and p + 1 < L:  # the next step is fed x_{t+2+j}
                    fed = ids[0, p + 1]
                    aligned &= bool(t2d[fed]) and int((logq > logq[int(t2d[:fed].sum())]).sum()) < align
    loss = sum(decay ** j * torch.stack(terms[j]).sum() / possible[j] for j in range(k) if terms[j])
    return loss, [len(t) for t in terms], correct, possible


@pytest.mark.parametrize("density,context", [(0.7, False), (0.15, False), (0.15, True)])
def test_loss_matches_per_position_reference(base, density, context):
    samples = _samples(3, (20, 14, 9), density=density)
    target_ids = build_vocab(samples, 264, 64)
    draft = _draft(base)
    draft.set_vocab_mapping(target_ids)
    k, decay = 4, 0.8
    ref, ref_counts, ref_correct, _ = _reference_loss(draft, base, samples, target_ids, k, decay, context)
    runner = BaseRunner(base, draft.config.aux_layer_ids)
    src = OnlineSource(runner, {"train": samples})
    p = prepare(src.batch("train", [0, 1, 2]), base.get_input_embeddings().weight, draft.t2d, "cpu", context)
    p.target_p = TargetHead.from_base(base, target_ids).log_probs(p.hidden_valid).exp()
    denom = step_counts(p.valid, k)
    out = TTTObjective(draft, k, decay)(p.features, p.embeds, p.valid, p.target_p, p.target_idx, denom)
    assert out.count.tolist() == ref_counts == denom.tolist()
    assert out.correct.tolist() == ref_correct
    assert torch.allclose(out.loss, ref, rtol=1e-5), (out.loss, ref)


@pytest.mark.parametrize("top_k", [48, 96])
def test_token_alignable_training_stops_a_chain_at_its_first_miss(base, top_k):
    """--align_top_k: step j trains origin t only while steps 0..j-1 each ranked the token they feed
    the next step among their top k; the denominators stay those of every chain, and without the
    input ids (evaluation) nothing is dropped."""
    samples = _samples(4, (40, 30, 24), density=0.7)
    target_ids = build_vocab(samples, 264, 128)  # not every token is in it: those chains stop too
    draft = _draft(base, vd=128)
    draft.set_vocab_mapping(target_ids)
    k, decay = 4, 0.8
    ref, ref_counts, ref_correct, possible = _reference_loss(draft, base, samples, target_ids, k, decay,
                                                             align=top_k)
    src = OnlineSource(BaseRunner(base, draft.config.aux_layer_ids), {"train": samples})
    p = prepare(src.batch("train", [0, 1, 2, 3]), base.get_input_embeddings().weight, draft.t2d, "cpu")
    p.target_p = TargetHead.from_base(base, target_ids).log_probs(p.hidden_valid).exp()
    denom = step_counts(p.valid, k)
    obj = TTTObjective(draft, k, decay, align_top_k=top_k, logit_chunk=128 * 7)  # several chunks per step
    out = obj(p.features, p.embeds, p.valid, p.target_p, p.target_idx, denom, p.draft_ids)
    assert denom.tolist() == possible
    assert out.count.tolist() == ref_counts and out.correct.tolist() == ref_correct
    assert torch.allclose(out.loss, ref, rtol=1e-5), (out.loss, ref)
    assert 0 < ref_counts[2] < possible[2]  # the mask drops some chains and keeps some
    unmasked = obj(p.features, p.embeds, p.valid, p.target_p, p.target_idx, denom)
    assert unmasked.count.tolist() == possible


def test_context_targets_train_every_position_and_test_on_the_loss_mask(base):
    samples = _samples(3, (20, 14, 9), density=0.15)
    draft = _draft(base)
    draft.set_vocab_mapping(build_vocab(samples, 264, 64))
    src = OnlineSource(BaseRunner(base, draft.config.aux_layer_ids), {"train": samples, "test": samples})
    obj = TTTObjective(draft, 3)
    embed = base.get_input_embeddings().weight
    stepper = Stepper(obj, obj, None, None, None, embed, torch.device("cpu"), context=True)
    train, test = (stepper._prepare(src, split, [0, 1, 2]) for split in ("train", "test"))
    masked = prepare(src.batch("test", [0, 1, 2]), embed, draft.t2d, "cpu")
    assert torch.equal(test.valid, masked.valid)
    assert not (masked.valid & ~train.valid).any() and int(train.valid.sum()) > 2 * int(masked.valid.sum())


def test_target_head_is_the_bases_restricted_softmax(base):
    samples = _samples(2)
    target_ids = torch.arange(0, 264, 3)
    ids, _, lengths = pad_batch(samples)
    f, h, a = BaseRunner(base, (1, 2, 3))(ids, lengths)
    logits = base(ids, attention_mask=(torch.arange(ids.shape[1])[None] < lengths[:, None]).long()).logits
    want = torch.log_softmax(logits[..., target_ids].float(), -1)
    got = TargetHead.from_base(base, target_ids).log_probs(h.reshape(-1, h.shape[-1])).view_as(want)
    m = torch.arange(ids.shape[1])[None] < lengths[:, None]
    assert torch.allclose(got[m], want[m], atol=1e-5)
    assert torch.equal(a[m], logits.argmax(-1)[m])


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gpt_neox"])
def test_draft_lm_head_starts_as_the_bases(arch):
    """Folded into the rows, the base's final RMSNorm scale (w, or Gemma's 1 + w) makes the draft's
    lm_head(norm(h)) the base's logits for the base's own pre-norm h; a LayerNorm is left alone."""
    model = tiny_arch_base(arch)
    final_norm = model.get_decoder().norm if arch != "gpt_neox" else model.get_decoder().final_layer_norm
    with torch.no_grad():
        final_norm.weight.uniform_(0.5, 2.0)  # not the ones of the init
    seen = {}
    final_norm.register_forward_hook(lambda m, args, out: seen.update(pre=args[0], post=out))
    model(torch.randint(2, 256, (1, 12)))
    target_ids = torch.arange(0, 256, 4)
    head = TargetHead.from_base(model, target_ids)
    rows = base_lm_head_rows(model, head)
    if arch == "gpt_neox":
        assert torch.equal(rows, head.weight)
        return
    dcfg = DraftConfig.from_base(model.config, target_ids.numel())
    cfg = TrainConfig(basepath="b", trainpath="t", testpath="t")
    draft = initial_draft(cfg.replace(init_lm_head="base"), dcfg, target_ids, model, head)
    random = initial_draft(cfg, dcfg, target_ids, model, head)  # the default
    assert torch.equal(draft.lm_head.weight, rows) and not torch.allclose(random.lm_head.weight, rows)
    got = draft.logits(seen["pre"])
    want = seen["post"] @ head.weight.T
    assert torch.allclose(got, want, atol=1e-3 * want.abs().max()), (got - want).abs().max()


def test_offline_cache_equals_online(base, tmp_path):
    samples = _samples(5, (12, 30, 7, 18, 25))
    runner = BaseRunner(base, (1, 2, 3))
    cache = FeatureCache(tmp_path / "cache")
    key = FeatureCache.key(base_fingerprint(base), (1, 2, 3), torch.float32, samples)
    assert not cache.has("train", key)
    for rank in range(2):  # two processes' shares
        cache.write_share("train", key, runner, samples, rank, 2, 2, torch.float32)
    cache.commit("train", key, len(samples))
    assert cache.has("train", key)
    assert not cache.has("train", FeatureCache.key(base_fingerprint(base), (1, 2, 3), torch.float32, samples[:4]))
    stored = StoredSource({"train": samples}, {"train": FeatureCache(tmp_path / "cache").reader("train")})
    online = OnlineSource(runner, {"train": samples})
    for idx in ([0, 1, 2], [4, 3]):
        a, b = stored.batch("train", idx), online.batch("train", idx)
        m = torch.arange(a.input_ids.shape[1])[None] < a.lengths[:, None]
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.loss_mask, b.loss_mask)
        assert torch.allclose(a.features[m], b.features[m], atol=1e-5)
        assert torch.allclose(a.hidden[m], b.hidden[m], atol=1e-5)
        assert torch.equal(a.argmax[m], b.argmax[m])


def test_rebuilt_split_computes_only_the_samples_it_lacks(base, tmp_path):
    """New data in a cache folder: the samples an earlier split of the same base, aux layers and
    dtype holds are copied from it, only the others go through the base, and the result reads
    like a fresh build. Another context, or a split written without digests, offers nothing."""
    fp, aux = base_fingerprint(base), (1, 2, 3)
    ctx = FeatureCache.context(fp, aux, torch.float32)
    old, extra = _samples(5, (12, 30, 7, 18, 25)), _samples(3, (16, 9, 21), seed=1)
    new = [old[3], extra[0], old[1], extra[1], old[4], extra[2]]
    runner = BaseRunner(base, aux)
    computed = []

    def counting(ids, lengths):
        computed.extend(ids[r, :n].tolist() for r, n in enumerate(lengths.tolist()))
        return runner(ids, lengths)

    cache = FeatureCache(tmp_path / "cache")
    key_old, key_new = (FeatureCache.key(fp, aux, torch.float32, d) for d in (old, new))
    assert cache.write_share("train", key_old, counting, old, 0, 1, 2, torch.float32, context=ctx) == 0
    cache.commit("train", key_old, len(old), ctx)
    computed.clear()
    copied = sum(cache.write_share("train", key_new, counting, new, rank, 2, 2, torch.float32, context=ctx)
                 for rank in range(2))  # two processes' shares
    cache.commit("train", key_new, len(new), ctx)
    assert copied == 3 and sorted(computed) == sorted(s.input_ids for s in extra)
    assert cache.has("train", key_new) and not cache.has("train", key_old)
    assert all(key_old[:12] not in p.name for p in (tmp_path / "cache").glob("*.safetensors"))  # stale shards gone
    stored = StoredSource({"train": new}, {"train": cache.reader("train")})
    online = OnlineSource(runner, {"train": new})
    for idx in ([0, 1, 2], [5, 4, 3]):
        a, b = stored.batch("train", idx), online.batch("train", idx)
        m = torch.arange(a.input_ids.shape[1])[None] < a.lengths[:, None]
        assert torch.allclose(a.features[m], b.features[m], atol=1e-5)
        assert torch.allclose(a.hidden[m], b.hidden[m], atol=1e-5) and torch.equal(a.argmax[m], b.argmax[m])
    # other aux layers: not the same features, nothing copied
    other = FeatureCache.context(fp, (0, 1, 2), torch.float32)
    assert cache.write_share("test", "k" * 64, BaseRunner(base, (0, 1, 2)), new[:2], 0, 1, 2, torch.float32,
                             context=other) == 0
    # a split committed without a context (as before digests): nothing copied from it
    bare = FeatureCache(tmp_path / "bare")
    bare.write_share("train", key_old, runner, old, 0, 1, 2, torch.float32)
    bare.commit("train", key_old, len(old))
    assert bare.write_share("train", key_new, runner, new, 0, 1, 2, torch.float32, context=ctx) == 0


def test_killed_cache_build_keeps_its_finished_shards(base, tmp_path, monkeypatch):
    """A build killed after some shards: run again, it computes only the samples those shards lack,
    numbers its shards after them, and the committed split reads like a fresh build."""
    import eagle.train.features as features

    monkeypatch.setattr(features, "SHARD_BYTES", 1)  # a shard per sample, so a kill leaves some whole
    fp, aux = base_fingerprint(base), (1, 2, 3)
    data = _samples(6, (12, 30, 7, 18, 25, 9))
    key = FeatureCache.key(fp, aux, torch.float32, data)
    runner = BaseRunner(base, aux)
    calls, computed = [], []

    def killed(ids, lengths):  # dies in its third batch, like a kill during the base's forward
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return runner(ids, lengths)

    def counting(ids, lengths):
        computed.extend(ids[r, :n].tolist() for r, n in enumerate(lengths.tolist()))
        return runner(ids, lengths)

    cache = FeatureCache(tmp_path / "cache")
    with pytest.raises(KeyboardInterrupt):
        cache.write_share("train", key, killed, data, 0, 1, 2, torch.float32)
    left = sorted(p.name for p in (tmp_path / "cache").glob("*.safetensors"))
    assert len(left) == 4 and not cache.has("train", key)  # two batches of two, nothing committed
    (tmp_path / "cache" / f".{left[0]}.tmp123").write_bytes(b"half a shard")
    assert cache.write_share("train", key, counting, data, 0, 1, 2, torch.float32) == 4
    cache.commit("train", key, len(data))
    assert sorted(computed) == sorted(s.input_ids for s in data if len(s.input_ids) > 18)  # the 4 shortest were kept
    shards = sorted(p.name for p in (tmp_path / "cache").glob("*.safetensors"))
    assert len(shards) == 6 and set(left) <= set(shards) and not list((tmp_path / "cache").glob(".*tmp*"))
    stored = StoredSource({"train": data}, {"train": cache.reader("train")})
    online = OnlineSource(runner, {"train": data})
    a, b = stored.batch("train", list(range(6))), online.batch("train", list(range(6)))
    m = torch.arange(a.input_ids.shape[1])[None] < a.lengths[:, None]
    assert torch.allclose(a.features[m], b.features[m], atol=1e-5) and torch.equal(a.argmax[m], b.argmax[m])


def test_global_batch_split_does_not_change_the_gradient(base):
    """The loss divides by the whole global batch's counts, so one batch of 4 and two micro-batches
    of 2 (what DDP or accumulation do) give the same gradient."""
    samples = _samples(4, (20, 14, 9, 17))
    target_ids = build_vocab(samples, 264, 64)
    runner = BaseRunner(base, DraftConfig.from_base(base.config, 64).aux_layer_ids)
    src = OnlineSource(runner, {"train": samples})
    head = TargetHead.from_base(base, target_ids)
    grads = []
    for split in ([[0, 1, 2, 3]], [[0, 3], [1, 2]]):
        draft = _draft(base)
        draft.set_vocab_mapping(target_ids)
        obj = TTTObjective(draft, 3)
        ps = [prepare(src.batch("train", c), base.get_input_embeddings().weight, draft.t2d, "cpu") for c in split]
        denom = sum(step_counts(p.valid, 3) for p in ps)
        for p in ps:
            p.target_p = head.log_probs(p.hidden_valid).exp()
            obj(p.features, p.embeds, p.valid, p.target_p, p.target_idx, denom).loss.backward()
        grads.append(torch.cat([q.grad.flatten() for q in draft.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("autocast", [None, torch.bfloat16])
@pytest.mark.parametrize("chunk,multiple", [(2 ** 26, 1), (5 * 48, 1), (5 * 48, 8)])  # one chunk; 5 rows; 8 rows
def test_fused_soft_ce_matches_autograd_through_log_softmax(autocast, chunk, multiple):
    """eagle.train.soft_ce finishes its gradients in forward, chunk by chunk: the same loss, per-row
    cross-entropy, hits and gradients as autograd through the plain lm_head and log_softmax, also
    when chunks are rounded to a row multiple (23 rows: 8 + 8 + 7, the last padded by one)."""
    torch.manual_seed(0)
    r, n, vd, h = 23, 9, 48, 16
    hidden, weight = torch.randn(r, h, requires_grad=True), (0.5 * torch.randn(vd, h)).requires_grad_()
    target_p = torch.softmax(3 * torch.randn(n, vd), -1)
    rows, target_idx, row_weight = torch.randint(0, n, (r,)), target_p.argmax(-1), torch.rand(r)
    with torch.autocast("cpu", dtype=autocast or torch.float32, enabled=autocast is not None):
        logp = torch.log_softmax((hidden @ weight.T).float(), -1)
        ce_ref = -(target_p[rows] * logp).sum(-1)
        (ce_ref * row_weight).sum().backward()
        hit_ref = logp.argmax(-1) == target_idx[rows]
    grads_ref = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    loss, ce, hit = linear_soft_ce(hidden, weight, target_p, rows, target_idx, row_weight, chunk, autocast, multiple)
    (2 * loss).backward()  # backward scales the gradients finished in forward
    tol = 1e-5 if autocast is None else 1e-2
    assert torch.allclose(ce, ce_ref.detach(), rtol=tol, atol=tol) and torch.equal(hit, hit_ref)
    assert torch.allclose(loss, (ce_ref * row_weight).sum().detach(), rtol=tol)
    for got, ref in zip((hidden.grad, weight.grad), grads_ref):  # bf16: a bf16 step of the largest apart
        assert torch.allclose(got, 2 * ref, rtol=tol, atol=1e-6 if autocast is None else 2 ** -7 * float(ref.abs().max()))
    with torch.no_grad():  # evaluation: no gradients made
        assert torch.equal(linear_soft_ce(hidden, weight, target_p, rows, target_idx, row_weight, chunk)[2], hit)


def test_fused_soft_ce_keeps_tiny_row_weights_under_fp16():
    """Row weights are ~1 / (rows in the global batch). In fp16 (the tutorial's DeepSpeed config on
    GPUs) gradients folded with them before the products would underflow; with a loss scale they
    must come out as float32's, to fp16 rounding."""
    torch.manual_seed(1)
    r, n, vd, h = 40, 12, 64, 32
    hidden, weight = torch.randn(r, h, requires_grad=True), (0.3 * torch.randn(vd, h)).requires_grad_()
    target_p = torch.softmax(2 * torch.randn(n, vd), -1)
    rows, target_idx, row_weight = torch.randint(0, n, (r,)), target_p.argmax(-1), torch.full((r,), 1e-5)
    grads = []
    for dtype in (torch.float32, torch.float16):
        hidden.grad = weight.grad = None
        loss, _, _ = linear_soft_ce(hidden, weight, target_p, rows, target_idx, row_weight, 16 * vd, dtype)
        (loss * 2 ** 16).backward()  # what a GradScaler does
        grads.append((hidden.grad.clone(), weight.grad.clone()))
    for ref, got in zip(*grads):
        assert float((got - ref).abs().max()) < 5e-3 * float(ref.abs().max())


@pytest.mark.parametrize("autocast", [None, torch.bfloat16])
def test_chunked_logits_give_the_same_loss_and_gradient(base, autocast):
    """The TTT objective with its lm_head rows in one chunk or in chunks (of SHAPE_MULTIPLE rows, the
    least): same loss, counts, hits and gradient, and the graph keeps no tensor of rows x draft
    vocabulary either way."""
    samples = _samples(3, (60, 44, 30))  # enough rows for several chunks of SHAPE_MULTIPLE
    target_ids = build_vocab(samples, 264, 48)  # Vd 48 != H 64
    runner = BaseRunner(base, DraftConfig.from_base(base.config, 48).aux_layer_ids)
    results = []
    for chunk in (2 ** 26, 5 * 48):  # one call; the smallest chunks (SHAPE_MULTIPLE rows)
        draft = _draft(base, vd=48)
        draft.set_vocab_mapping(target_ids)
        p = prepare(OnlineSource(runner, {"train": samples}).batch("train", [0, 1, 2]),
                    base.get_input_embeddings().weight, draft.t2d, "cpu")
        p.target_p = TargetHead.from_base(base, target_ids).log_probs(p.hidden_valid).exp()
        denom = step_counts(p.valid, 4)
        obj = TTTObjective(draft, 4, 0.8, autocast_dtype=autocast, logit_chunk=chunk)
        largest = [0]

        def pack(t):
            if t.dim() == 2 and t.shape[1] == 48 and t.shape[0] != 64:  # [rows, Vd], not a weight
                largest[0] = max(largest[0], t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = obj(p.features, p.embeds, p.valid, p.target_p, p.target_idx, denom)
        out.loss.backward()
        grad = torch.cat([q.grad.flatten() for q in draft.parameters()])
        results.append((out, grad, largest[0]))
    (a, ga, big), (b, gb, small) = results
    rows = int(a.count.sum())
    assert rows > 2 * SHAPE_MULTIPLE and big == small == 0  # three chunks at least
    assert a.count.tolist() == b.count.tolist() and a.correct.tolist() == b.correct.tolist()
    tol = 1e-5 if autocast is None else 1e-2
    assert torch.allclose(a.loss, b.loss, rtol=tol) and torch.allclose(a.ploss_sum, b.ploss_sum, rtol=tol)
    # bf16 products summed in another order: a bf16 step of the largest gradient apart at most
    assert torch.allclose(ga, gb, rtol=tol, atol=1e-7 if autocast is None else 2 ** -7 * float(ga.abs().max()))


def test_matmul_shapes_do_not_follow_the_batch_lengths(base):
    """On CPUs oneDNN compiles and keeps a matmul per shape: batches of other lengths (and other
    numbers of trained rows) must reuse the base's and the draft's shapes, not add new ones
    (eagle.train.dataset.pad_batch, and the TTT subsets and loss chunks of eagle.train.ttt)."""
    shapes = []

    def record(module, args):
        shapes[-1].add(tuple(args[0].shape))

    for lengths in ((20, 14, 9), (27, 5, 11)):
        samples = _samples(3, lengths)
        target_ids = build_vocab(samples, 264, 48)
        draft = _draft(base, vd=48)
        draft.set_vocab_mapping(target_ids)
        shapes.append(set())
        hooks = [m.register_forward_pre_hook(record) for net in (base, draft) for m in net.modules()
                 if isinstance(m, torch.nn.Linear)]
        src = OnlineSource(BaseRunner(base, draft.config.aux_layer_ids), {"train": samples})
        p = prepare(src.batch("train", [0, 1, 2]), base.get_input_embeddings().weight, draft.t2d, "cpu")
        assert p.features.shape[1] == p.valid.shape[1] == SHAPE_MULTIPLE
        p.target_p = TargetHead.from_base(base, target_ids).log_probs(p.hidden_valid).exp()
        TTTObjective(draft, 4, 0.8)(p.features, p.embeds, p.valid, p.target_p, p.target_idx, step_counts(p.valid, 4))
        for h in hooks:
            h.remove()
    assert shapes[0] == shapes[1] and all(s[1] % SHAPE_MULTIPLE == 0 for s in shapes[0])  # [B, S or M, in]


def test_vocab_is_the_most_frequent_targets():
    samples = [Sample([5, 5, 5, 7, 7, 9, 1, 2], [1, 1, 1, 1, 1, 1, 0, 0]), Sample([7, 3], [1, 0])]
    ids = build_vocab(samples, 16, 2)
    assert ids.tolist() == [5, 7]  # 7: three times, 5: three times, 9 once
    ids = build_vocab(samples, 16, 6)  # 3 targets, then the most frequent others (1, 2, 3), no repeats
    assert ids.tolist() == [1, 2, 3, 5, 7, 9]
    ids = build_vocab(samples, 16, 9)  # then the lowest unused ids
    assert ids.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 9]
    # held-out targets outside the vocabulary count against it; unmasked tokens do not count
    assert vocab_coverage([Sample([5, 8, 8, 9, 8], [1, 1, 1, 1, 0])], build_vocab(samples, 16, 2)) == 0.25
    d = Eagle3Draft(DraftConfig(64, 128, 4, 4, vocab_size=16, draft_vocab_size=9, target_hidden_size=64,
                                aux_layer_ids=(1, 1, 1)))
    d.set_vocab_mapping(ids)
    assert d.to_target(torch.arange(9)).tolist() == ids.tolist()
    assert math.isclose(d.t2d.sum().item(), 9)
