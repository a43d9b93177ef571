"""A head trained for a few hundred steps on a tiny base drafts what the base writes: per-step
accuracy far above chance, and a much higher acceptance length τ in `eagenerate`."""

import dataclasses

import torch

from eagle.data import fim_prompt_ids
from eagle.model.config import DraftConfig
from eagle.model.draft import Eagle3Draft
from eagle.model.ea_model import EaModel
from eagle.model.tree import TreeConfig
from eagle.train import TrainConfig, fit
from eagle.train.dataset import Sample
from eagle.train.tiny import fim_records, tiny_base, tiny_tokenizer


def _own_continuations(base, tok, records, new=40):
    """FIM prompts plus the base's own greedy continuation, the loss on the continuation: the
    data EAGLE trains on (the base's outputs, not human text)."""
    prompts = [fim_prompt_ids(tok, r["prefix"], r["suffix"]) for r in records]
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    att = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    out = base.generate(input_ids=ids, attention_mask=att, max_new_tokens=new, do_sample=False,
                        eos_token_id=None, pad_token_id=0)
    return [Sample(p + out[i, width:].tolist(), [0] * len(p) + [1] * new) for i, p in enumerate(prompts)]


def _tau(base, draft, tok, records) -> float:
    tree = TreeConfig.for_device("cpu")
    if hasattr(tree, "lookup"):  # measure the draft alone, without the prompt-lookup branch
        tree = dataclasses.replace(tree, lookup=0)
    model = EaModel(base, draft, tok, tree=tree)
    new = steps = 0
    for r in records:
        ids = torch.tensor([fim_prompt_ids(tok, r["prefix"], r["suffix"])])
        _, n, s = model.eagenerate(ids, max_new_tokens=40, log=True)
        new, steps = new + n, steps + s
    return new / steps


def test_trained_head_learns_the_base_and_raises_tau():
    tok = tiny_tokenizer()
    base = tiny_base(layers=4)
    train_recs, test_recs = fim_records(64, seed=1), fim_records(16, seed=2)
    train, test = _own_continuations(base, tok, train_recs), _own_continuations(base, tok, test_recs)
    vd = 200
    cfg = TrainConfig(num_epochs=100, max_steps=300, draft_vocab_size=vd, lr=3e-3, batch_size=2, seed=0)
    result = fit(base, train, cfg, test_samples=test)
    first, last = result.history[0], result.history[-1]
    chance = 100.0 / vd
    # every TTT step learns, including the ones fed the draft's own outputs
    assert all(a > 40 for a in last["train_acc"]), last["train_acc"]
    assert all(a > 30 for a in last["test_acc"]), last["test_acc"]
    assert last["test_acc"][0] > 60 * chance and last["test_acc"][0] > first["test_acc"][0] + 15
    assert last["test_ploss"][0] < first["test_ploss"][0] - 0.3

    untrained = Eagle3Draft(DraftConfig.from_base(base.config, vd))
    untrained.set_vocab_mapping(result.draft.to_target(torch.arange(vd)))
    seen, unseen = train_recs[:6], fim_records(6, seed=7)
    tau_seen, tau_seen0 = _tau(base, result.draft, tok, seen), _tau(base, untrained, tok, seen)
    tau_new, tau_new0 = _tau(base, result.draft, tok, unseen), _tau(base, untrained, tok, unseen)
    print(f"tau: training prompts {tau_seen:.2f} (untrained {tau_seen0:.2f}), "
          f"new prompts {tau_new:.2f} (untrained {tau_new0:.2f})")
    assert tau_seen0 < 1.3 and tau_new0 < 1.3
    assert tau_seen > 2.5 and tau_seen > 2 * tau_seen0
    assert tau_new > tau_new0 + 0.3
