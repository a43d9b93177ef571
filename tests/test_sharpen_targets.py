"""scripts/sharpen_targets.py must train against softmax(z / T) of the base's own (soft-capped) logits z,
and leave the target alone at T = 1, so that its measurement (docs/training.md) is of the temperature."""

import torch

from eagle.train.ttt import TargetHead
from scripts_module import load_script

sharpen_targets = load_script("sharpen_targets")


def test_sharpened_target_is_the_tempered_softmax():
    g = torch.Generator().manual_seed(0)
    head = TargetHead(torch.randn(40, 16, generator=g), torch.randn(40, generator=g), softcap=5.0)
    hidden = 3 * torch.randn(6, 16, generator=g)
    z = torch.tanh((hidden @ head.weight.T + head.bias) / 5.0) * 5.0

    torch.testing.assert_close(sharpen_targets.sharpened(1.0)(head, hidden), head.log_probs(hidden))
    sharp = sharpen_targets.sharpened(0.5)(head, hidden)
    torch.testing.assert_close(sharp, torch.log_softmax(z / 0.5, -1))
    # the same pick, held with more of the mass
    assert torch.equal(sharp.argmax(-1), z.argmax(-1))
    assert (sharp.max(-1).values > head.log_probs(hidden).max(-1).values).all()
    torch.testing.assert_close(head.log_probs(hidden), torch.log_softmax(z, -1))  # importing patches nothing
