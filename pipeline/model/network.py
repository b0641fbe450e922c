"""The click model: the reference architecture and its fused forward pass.

Reference: ``Linear(40→h1) → Linear(h1→h2) → ReLU → Linear(h2→1)``, output a logit. With no
activation between the first two layers they compose to one linear map,
``fc2(fc1(x)) = x @ (W2 W1)ᵀ + (W2 b1 + b2)``, so training, evaluation and the exports
(:class:`FoldedClickMLP`) apply the 40×h2 product (8× fewer multiply-adds at 256/128) while the
parameters and the optimizer state, the model of record, stay exactly the reference's. Training
through the fused layers, with gradients chained back to W1, b1, W2, b2 by hand:
:class:`pipeline.model.fused_trainer.FusedTrainer`.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.data.schema import MODEL_INPUT_WIDTH


class ClickMLP(nn.Module):
    """The reference click model; ``forward`` takes [n, 40] float32 and returns n logits."""

    def __init__(self, hidden: tuple[int, int] = (256, 128), input_dim: int = MODEL_INPUT_WIDTH):
        super().__init__()
        self.fc1 = nn.Linear(input_dim, hidden[0])
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.out = nn.Linear(hidden[1], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.fc2(self.fc1(x)))).squeeze(-1)


def fused_first_layers(model: ClickMLP) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) with ``x @ W.T + b == fc2(fc1(x))``: W is h2×40."""
    w2 = model.fc2.weight
    return w2 @ model.fc1.weight, torch.addmv(model.fc2.bias, w2, model.fc1.bias)


@torch.inference_mode()
def fused_logits(model: ClickMLP, x: torch.Tensor) -> torch.Tensor:
    """Logits of rows of model input [n, 40] (user f00–f29, restaurant f00–f09)."""
    w, b = fused_first_layers(model)
    h = torch.addmm(b, x, w.t()).clamp_min_(0)
    return torch.addmv(model.out.bias, h, model.out.weight[0])


class FoldedClickMLP(nn.Module):
    """A :class:`ClickMLP` with ``fc2 ∘ fc1`` multiplied out into one layer ``fc`` (40 → h2; no
    activation separates them), then ReLU and ``out``: the same logits within float rounding, a
    quarter of the multiply-adds at 256/128. What the exports hold; the model of record stays a
    ClickMLP, as trained."""

    def __init__(self, model: ClickMLP):
        super().__init__()
        with torch.no_grad():
            w, b = fused_first_layers(model)
            self.fc = nn.Linear(w.shape[1], w.shape[0])
            self.out = nn.Linear(model.out.in_features, 1)
            self.fc.weight.copy_(w)
            self.fc.bias.copy_(b)
            self.out.weight.copy_(model.out.weight)
            self.out.bias.copy_(model.out.bias)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.fc(x))).squeeze(-1)


def make_optimizer(model: ClickMLP, lr: float) -> torch.optim.Adam:
    """Adam as the reference uses it (its state and ``state_dict`` are what checkpoints keep;
    :class:`~pipeline.model.fused_trainer.FusedTrainer` does the update)."""
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
