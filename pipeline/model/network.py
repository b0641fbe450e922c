"""The click model: the reference architecture and a mathematically identical fast path.

Reference: ``Linear(40→h1) → Linear(h1→h2) → ReLU → Linear(h2→1)``, output a logit. With no
activation between the first two layers they compose to one linear map,
``fc2(fc1(x)) = x @ (W2 W1)ᵀ + (W2 b1 + b2)``, so training and scoring apply the 40×h2 product
(8× fewer multiply-adds at 256/128) while the parameters, the optimizer state and the exported
model stay exactly the reference's. Gradients are chained back to W1, b1, W2, b2 by hand
(:class:`FusedTrainer`), which also avoids autograd's extra passes over the B×h2 activations.
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


class FusedTrainer:
    """One Adam step of BCEWithLogits loss on a batch, through the fused layers, by hand.

    Produces the same loss and the same parameter gradients as autograd through
    :meth:`ClickMLP.forward` (up to float rounding; tested), then steps the optimizer.
    """

    def __init__(self, model: ClickMLP, optimizer: torch.optim.Optimizer):
        self.model, self.optimizer = model, optimizer

    @torch.no_grad()
    def step(self, x: torch.Tensor, clicks: torch.Tensor) -> float:
        m = self.model
        w1, b1, w2, w3 = m.fc1.weight, m.fc1.bias, m.fc2.weight, m.out.weight
        w, b = fused_first_layers(m)
        h = torch.addmm(b, x, w.t()).clamp_min_(0)                   # a = relu(x Wᵀ + b)
        z = torch.addmv(m.out.bias, h, w3[0])
        loss = nn.functional.binary_cross_entropy_with_logits(z, clicks)
        dz = torch.sigmoid(z).sub_(clicks).div_(len(clicks))          # dL/dz
        grad_w3 = (h.t() @ dz).unsqueeze(0)
        h.sign_().mul_(w3).mul_(dz.unsqueeze(1))                      # dL/dh = 1[h>0] · w3 · dz
        grad_w = h.t() @ x                                            # dL/dW, h2×40
        grad_b = h.sum(0)                                             # dL/db
        m.fc1.weight.grad = w2.t() @ grad_w                           # W = W2 W1, b = W2 b1 + b2
        m.fc1.bias.grad = w2.t() @ grad_b
        m.fc2.weight.grad = torch.addr(grad_w @ w1.t(), grad_b, b1)
        m.fc2.bias.grad = grad_b
        m.out.weight.grad = grad_w3
        m.out.bias.grad = dz.sum().reshape(1)
        self.optimizer.step()
        return float(loss)


def make_optimizer(model: ClickMLP, lr: float) -> torch.optim.Adam:
    """Adam as the reference uses it; the fused (single-kernel) CPU implementation."""
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
