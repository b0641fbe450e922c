"""The fused forward pass gives the reference module's logits."""

import torch

from pipeline.model.network import ClickMLP, fused_logits
from pipeline_devtools.synthetic import click_batch


def test_fused_logits_equal_the_reference_forward():
    torch.manual_seed(0)
    model = ClickMLP()
    users, restaurants, _ = click_batch()
    x = torch.cat([users, restaurants], dim=1)
    torch.testing.assert_close(fused_logits(model, x), model(x).detach(), rtol=1e-5, atol=1e-5)
