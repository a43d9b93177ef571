"""scripts/widen_head.py must give a wider head that drafts exactly what the narrow one does, so that
training it measures what width adds (benchmarks/README.md) and not a worse start."""

import pytest
import torch

from eagle.model.checkpoint import load_draft, save_draft
from eagle.model.ea_model import EaModel
from eagle.model.tree import TreeConfig
from scripts_module import load_script
from tiny import VOCAB, fit_draft, tiny_base

widen_head = load_script("widen_head")


def test_wider_head_drafts_the_same(tmp_path):
    base = tiny_base("llama", predictable=True)
    narrow = fit_draft(base)
    width = narrow.config.intermediate_size
    save_draft(widen_head.widen(narrow, 2 * width), tmp_path / "wide")
    wide = load_draft(tmp_path / "wide")
    assert wide.config.intermediate_size == 2 * width
    assert wide.midlayer.mlp.up_proj.weight[width:].abs().sum() > 0  # the new units can learn
    assert torch.equal(wide.d2t, narrow.d2t)

    cfg, g = narrow.config, torch.Generator().manual_seed(3)
    hidden = torch.randn(2, 6, 3 * cfg.target_hidden_size, generator=g)
    embeds, pos = torch.randn(2, 6, cfg.hidden_size, generator=g), torch.arange(6).expand(2, 6)
    with torch.no_grad():
        out = [d.logits(d(hidden, embeds, pos).hidden) for d in (narrow, wide)]
    torch.testing.assert_close(out[1], out[0], rtol=0, atol=1e-5)

    # and so the decoding loop takes the same steps with either
    ids = torch.randint(2, VOCAB, (1, 10), generator=g)
    tree = TreeConfig(total_token=12, depth=4, top_k=3)
    steps = [EaModel(base, d, tree=tree).eagenerate(ids, max_new_tokens=32, log=True)[2] for d in (narrow, wide)]
    assert steps[0] == steps[1]


def test_narrower_is_refused():
    narrow = fit_draft(tiny_base("llama"), steps=1)
    with pytest.raises(SystemExit, match="must exceed"):
        widen_head.widen(narrow, narrow.config.intermediate_size)
