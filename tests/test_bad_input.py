"""Bad generation arguments fail early with a clear message, never deep inside torch."""

import pytest
import torch

from eagle.model.config import DraftConfig
from eagle.model.draft import Eagle3Draft
from eagle.model.ea_model import EaModel
from eagle.model.tree import TreeConfig
from tiny import tiny_base


@pytest.fixture(scope="module")
def model():
    base = tiny_base("llama")
    return EaModel(base, Eagle3Draft(DraftConfig.from_base(base.config)), tree=TreeConfig(8, 3, 2))


@pytest.mark.parametrize("gen", ["eagenerate", "naivegenerate"])
@pytest.mark.parametrize("kwargs, match", [
    (dict(input_ids=torch.zeros(1, 0, dtype=torch.long)), "empty prompt"),
    (dict(input_ids=torch.ones(1, 50, dtype=torch.long), max_length=50), "at or past max_length"),
    (dict(input_ids=torch.ones(1, 600, dtype=torch.long)), "at or past max_length"),
    (dict(input_ids=torch.ones(2, 5, dtype=torch.long)), "batch size 1"),
    (dict(input_ids=torch.ones(1, 5, dtype=torch.long), temperature=-1.0), "temperature"),
    (dict(input_ids=torch.ones(1, 5, dtype=torch.long), top_p=1.5), "top_p"),
    (dict(input_ids=torch.ones(1, 5, dtype=torch.long), top_p=-0.5), "top_p"),
    (dict(input_ids=torch.ones(1, 5, dtype=torch.long), top_k=-2), "top_k"),
    (dict(input_ids=torch.ones(1, 5, dtype=torch.long), max_new_tokens=-1), "max_new_tokens"),
])
def test_clear_errors(model, gen, kwargs, match):
    with pytest.raises(ValueError, match=match):
        getattr(model, gen)(**kwargs)


def test_defined_results(model):
    ids = torch.tensor([[3, 4, 5]])
    assert torch.equal(model.eagenerate(ids, max_new_tokens=0), ids)
    out, new, steps = model.eagenerate(ids, max_new_tokens=0, log=True)
    assert (new, steps) == (0, 0)
    assert model.eagenerate([3, 4, 5], max_new_tokens=4).shape == (1, 7)  # a plain list is accepted
    # top_p = 1 and top_k larger than the vocabulary mean "off", not an error
    assert model.eagenerate(ids, temperature=0.5, top_p=1.0, top_k=10_000, max_new_tokens=4).shape == (1, 7)


def test_tree_config_validation():
    for bad in (dict(total_token=0), dict(depth=0), dict(top_k=-1), dict(expand_threshold=1.5),
                dict(expand_threshold=-0.1), dict(min_prob=1.0), dict(min_prob=-0.01)):
        with pytest.raises(ValueError):
            TreeConfig(**bad)
