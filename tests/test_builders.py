"""Builders behind the registry names (mosaicbert.training.builders)."""

import pytest
import torch

from mosaicbert import components, registry  # noqa: F401  (components fills the tables)


@pytest.mark.parametrize("fused", [None, True])
def test_decoupled_adamw_is_composers_update(fused):
    """The fused-AdamW formulation equals Composer's DecoupledAdamW, also while the LR schedule moves."""
    torch.manual_seed(0)
    start = [torch.randn(5, 3), torch.randn(7)]
    kwargs = dict(lr=5e-3, betas=[0.9, 0.98], eps=1e-6, weight_decay=0.5)  # large decay: visible effect
    runs = {}
    for name in ("decoupled_adamw", "composer_decoupled_adamw"):
        params = [torch.nn.Parameter(p.clone()) for p in start]
        extra = {"fused": fused} if name == "decoupled_adamw" else {}
        optimizer = registry.build_named(registry.OPTIMIZERS, {"name": name, **kwargs, **extra}, params=params)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
        g = torch.Generator().manual_seed(1)
        for _ in range(6):
            for p in params:
                p.grad = torch.randn(p.shape, generator=g)
            optimizer.step()
            schedule.step()
        runs[name] = params
    for ours, composers, initial in zip(runs["decoupled_adamw"], runs["composer_decoupled_adamw"], start):
        assert not torch.allclose(ours, initial)
        torch.testing.assert_close(ours, composers, rtol=1e-5, atol=1e-6)


def test_plain_adamw_differs_from_decoupled_when_lr_is_not_one():
    """Guards the test above: the two decay rules really are different formulas."""
    torch.manual_seed(0)
    start = torch.randn(4, 4)
    results = []
    for name in ("adamw", "decoupled_adamw"):
        p = torch.nn.Parameter(start.clone())
        optimizer = registry.build_named(registry.OPTIMIZERS, {"name": name, "lr": 1e-2, "weight_decay": 0.5}, params=[p])
        p.grad = torch.zeros_like(p)
        optimizer.step()
        results.append(p.detach().clone())
    assert not torch.allclose(results[0], results[1])
