"""Training the click model through its fused layers, gradients by hand.

:class:`FusedTrainer` gives the reference's loss and parameter gradients (up to float rounding)
and ``torch.optim.Adam(fused=True)``'s update, computed through the fused first layers
(:func:`pipeline.model.network.fused_first_layers`); it also avoids autograd's extra passes over
the B×h2 activations. It works on flat buffers that the model and the optimizer are first bound
to (:func:`bind_to_flat_buffers`).
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.model import inputs, native
from pipeline.model.batches import Pool
from pipeline.model.network import ClickMLP


@dataclass(frozen=True)
class FlatBuffers:
    """A model's parameters, their gradients and Adam's state, each in one flat tensor, in the
    order of :func:`bind_to_flat_buffers`'s layout."""

    model: ClickMLP
    optimizer: torch.optim.Adam
    flat: torch.Tensor
    grad: torch.Tensor
    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    step_count: torch.Tensor  # one tensor shared by every parameter's state


def bind_to_flat_buffers(model: ClickMLP, optimizer: torch.optim.Adam) -> FlatBuffers:
    """Move ``model``'s parameters and ``optimizer``'s Adam state into new flat buffers, in place.

    Afterwards each parameter's ``data`` and ``grad`` are views of ``flat`` and ``grad``, and the
    optimizer's per-parameter state is ``{"step": step_count, "exp_avg": view, "exp_avg_sq":
    view}``, with the values they had (a fresh optimizer's state starts at zero). The module's and
    the optimizer's ``state_dict`` read the same as before, so checkpoints do not change, but
    whatever updates the buffers updates the model. The optimizer must be plain Adam (one group,
    no weight decay, amsgrad or maximize) over the model's parameters in module order, all at the
    same step count; ValueError otherwise.
    """
    group = optimizer.param_groups[0]
    if (len(optimizer.param_groups) != 1 or group["weight_decay"] or group["amsgrad"]
            or group["maximize"]):
        raise ValueError("FusedTrainer implements plain Adam (one group, no weight decay, amsgrad or maximize)")
    params = _parameters(model)
    if [id(p) for p in params] != [id(p) for p in group["params"]]:
        raise ValueError("the optimizer must hold the model's parameters in module order")
    size = sum(p.numel() for p in params)
    buffers = FlatBuffers(model, optimizer, flat=torch.empty(size), grad=torch.zeros(size), exp_avg=torch.zeros(size),
                          exp_avg_sq=torch.zeros(size), step_count=torch.zeros(()))
    steps = set()
    for p, view in zip(params, _layout(params), strict=True):
        view(buffers.flat).copy_(p.detach())
        if state := optimizer.state.get(p):
            view(buffers.exp_avg).copy_(state["exp_avg"])
            view(buffers.exp_avg_sq).copy_(state["exp_avg_sq"])
            steps.add(float(state["step"]))
        p.data, p.grad = view(buffers.flat), view(buffers.grad)
        optimizer.state[p] = {"step": buffers.step_count, "exp_avg": view(buffers.exp_avg),
                              "exp_avg_sq": view(buffers.exp_avg_sq)}
    if len(steps) > 1:
        raise ValueError(f"the optimizer's parameters have different step counts {sorted(steps)}")
    buffers.step_count.fill_(steps.pop() if steps else 0.0)
    return buffers


def _parameters(model: ClickMLP) -> list[torch.Tensor]:
    return [model.fc1.weight, model.fc1.bias, model.fc2.weight, model.fc2.bias, model.out.weight, model.out.bias]


def _layout(params: list[torch.Tensor]) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """Where each parameter lives in a flat buffer: fc1's weight and bias side by side as one
    [h1, 41] block, [W1 | b1] (so the products use it as is), then the others in order."""
    h1, width = params[0].shape
    block = h1 * (width + 1)
    views: list[Callable[[torch.Tensor], torch.Tensor]] = [
        lambda flat: flat[:block].view(h1, width + 1)[:, :width],
        lambda flat: flat[:block].view(h1, width + 1)[:, width]]
    offset = block
    for p in params[2:]:
        views.append(functools.partial(_flat_view, start=offset, shape=p.shape))
        offset += p.numel()
    return views


def _flat_view(flat: torch.Tensor, start: int, shape: torch.Size) -> torch.Tensor:
    return flat[start:start + shape.numel()].view(shape)


LOSS_LOG_ROWS = 1 << 16


class FusedTrainer:
    """Adam steps of BCEWithLogits loss through the fused layers, gradients by hand, on the flat
    buffers a model and its optimizer were bound to (:func:`bind_to_flat_buffers`): each step
    updates the model and the optimizer's state in place.

    Gives the reference's loss and parameter gradients (up to float rounding) and
    ``torch.optim.Adam(fused=True)``'s update (tested against autograd and Adam). At small batches
    the per-operation overhead, not the arithmetic, dominated a step, so:

    - the model's parameters, their gradients and Adam's moments each live in one flat buffer and
      Adam is one kernel over the buffers;
    - fc1's weight and bias sit side by side as one [h1, 41] block and the input carries a ones
      column, so each bias rides in its weight's matrix product and no parameter is copied;
    - every intermediate is a preallocated buffer, each product takes its operands in the
      orientation MKL runs fastest, and the loss is computed for many batches at once
      (:meth:`take_loss`) rather than per step;
    - with ``use_native`` (and :mod:`pipeline.model.native` available) the whole step is one call
      of the native kernel on these same buffers, and :meth:`train_pairs` gathers and steps a batch
      in one call; ``kernel`` says which path runs.
    """

    def __init__(self, buffers: FlatBuffers, batch_size: int = 8192, use_native: bool = True):
        model = buffers.model
        self.model, self.optimizer, self.group = model, buffers.optimizer, buffers.optimizer.param_groups[0]
        self.flat, self.grad, self.exp_avg, self.exp_avg_sq, self.step_count = (
            buffers.flat, buffers.grad, buffers.exp_avg, buffers.exp_avg_sq, buffers.step_count)
        (h1, self.width), h2 = model.fc1.weight.shape, model.fc2.weight.shape[0]
        block = h1 * (self.width + 1)
        self._w1b, self._g1 = self.flat[:block].view(h1, -1), self.grad[:block].view(h1, -1)  # [W1 | b1], its gradient
        # the other gradients the torch path writes, as the parameters' grad: views of ``grad``
        self._w2_grad, self._b2_grad, self._w3_grad, self._b3_grad = (
            view(self.grad) for view in _layout(_parameters(model))[2:])
        self._wb_t = torch.empty(self.width + 1, h2)   # [W2 W1 | W2 b1 + b2]ᵀ: the fused layer
        self._g_t = torch.empty(self.width + 1, h2)    # dL/d[W | b]ᵀ of the fused layer
        self._wg_t = torch.empty(self.width + 1, h2)
        self._logged_z, self._logged_y = torch.empty(LOSS_LOG_ROWS), torch.empty(LOSS_LOG_ROWS)
        self._logged, self._loss_sum, self._loss_rows = 0, 0.0, 0
        self.kernels = native.kernels() if use_native else None
        why_not = native.unavailable_reason() if use_native else "use_native=False"
        self.kernel = "native" if self.kernels else f"torch ({why_not})"
        self.batch_size = batch_size
        self._resize(batch_size)

    def _resize(self, rows: int) -> None:
        h2 = self._wb_t.shape[1]
        self._rows = rows
        self._views: dict[int, tuple[torch.Tensor, ...]] = {}
        self._x = torch.ones(rows, self.width + 1)  # the last column stays 1
        self._xd = torch.empty(rows, self.width + 1)
        self._h, self._z, self._dz = torch.empty(rows, h2), torch.empty(rows), torch.empty(rows)
        if self.kernels:  # Adam's hyperparameters: set from the optimizer's group at each call (_native_state)
            self._native = native.Trainer(self._w1b.shape[0], h2, self.width + 1, *(t.data_ptr() for t in (
                self.flat, self.grad, self.exp_avg, self.exp_avg_sq, self.step_count, self._x, self._h, self._dz,
                self._wb_t, self._g_t)))

    def _batch_views(self, n: int) -> tuple:
        """The buffers cut to ``n`` rows; kept for the full batch only (a pool's last batch is shorter)."""
        if n > self._rows:
            self._resize(n)
        views = self._views.get(n) or (self._x[:n], self._x[:n, :self.width], self._xd[:n], self._h[:n],
                                       self._z[:n], self._dz[:n], self._dz[:n].unsqueeze(1))
        if n == self._rows:
            self._views[n] = views
        return views

    def input_buffer(self, rows: int) -> torch.Tensor:
        """A [rows, 40] view to gather the next batch into (saves a copy in :meth:`step`)."""
        return self._batch_views(rows)[1]

    @torch.no_grad()
    def step(self, x: torch.Tensor, clicks: torch.Tensor) -> None:
        """One Adam step on rows ``x`` [n, 40] with labels ``clicks`` [n] (the loss: :meth:`take_loss`)."""
        n = len(clicks)
        xb, x40, xd, h, z, dz, dz_col = self._batch_views(n)
        if x.data_ptr() != x40.data_ptr():
            x40.copy_(x)
        if self.kernels:
            self._native_step(self.kernels, clicks)
            return
        m, width = self.model, self.width
        w2, b2, w3 = m.fc2.weight, m.fc2.bias, m.out.weight
        w1b, wb_t, g_t = self._w1b, self._wb_t, self._g_t
        # the orientations of each product are the ones MKL runs fastest at these shapes (measured)
        torch.mm(w1b.t(), w2.t(), out=wb_t)
        wb_t[width].add_(b2)
        torch.mm(xb, wb_t, out=h).clamp_min_(0)                     # a = relu([x 1] [W b]ᵀ)
        torch.addmv(m.out.bias, h, w3[0], out=z)
        self._log_logits(z, clicks)
        torch.sigmoid(z, out=dz).sub_(clicks).div_(n)               # dL/dz
        torch.sum(dz, 0, keepdim=True, out=self._b3_grad)
        torch.mul(xb, dz_col, out=xd)                               # [x dz | dz]
        torch.mm(xd.t(), h.sign_(), out=g_t)                        # Σ_i [x_i 1]ᵀ dz_i 1[a_i > 0]
        # dL/dw3_j = Σ_i a_ij dz_i = [W b]_j · g_j, since a_ij = 1[a_ij > 0] [x_i 1]·[W b]_j
        torch.sum(torch.mul(wb_t, g_t, out=self._wg_t), 0, out=self._w3_grad[0])
        g_t.mul_(w3)                                                # dL/d[W b] = w3 ⊙ g
        torch.mm(w2.t(), g_t.t(), out=self._g1)                     # W = W2 W1, b = W2 b1 + b2
        torch.mm(g_t.t(), w1b.t(), out=self._w2_grad)
        self._b2_grad.copy_(g_t[width])
        group = self.group
        # what torch.optim.Adam(fused=True) runs, with the kernel once over the flat buffers
        self.step_count.add_(1)
        torch._fused_adam_([self.flat], [self.grad], [self.exp_avg], [self.exp_avg_sq], [], [self.step_count],
                           lr=group["lr"], beta1=group["betas"][0], beta2=group["betas"][1], weight_decay=0.0,
                           eps=group["eps"], amsgrad=False, maximize=False)

    def train_pairs(self, users: torch.Tensor, restaurants: torch.Tensor, pool: Pool, starts: Iterable[int]) -> int:
        """Adam steps on a pool's pairs (users[user_rows[i]], restaurants[restaurant_rows[i]])
        labelled ``clicks``: one batch of ``batch_size`` rows of its visiting order (the last may
        be shorter) from each position in ``starts``, gathered into the input buffer and stepped;
        with the native kernels, one call a batch. Returns the number of steps."""
        size, total, steps = self.batch_size, len(pool), 0
        if not (self.kernels and self.kernels.takes(users, restaurants, pool.user_rows, pool.restaurant_rows)):
            for start in starts:
                user_rows, restaurant_rows, clicks = pool.batch(start, min(start + size, total))
                self.step(inputs.gather(users, restaurants, user_rows, restaurant_rows,
                                        self.input_buffer(len(clicks))), clicks)
                steps += 1
            return steps
        inputs.check_widths(users.shape[1], restaurants.shape[1])  # the kernel writes rows of the input width
        clicks, order = pool.clicks.float().contiguous(), pool.order
        order = order.long().contiguous() if order is not None else None
        state = self._native_state()
        state.users, (state.n_users, state.user_width) = users.data_ptr(), users.shape
        state.restaurants, (state.n_restaurants, state.restaurant_width) = restaurants.data_ptr(), restaurants.shape
        run, state_ref = self.kernels.library.train_batch, ctypes.byref(state)
        rows_at, restaurants_at = pool.user_rows.data_ptr(), pool.restaurant_rows.data_ptr()
        clicks_at, order_at = clicks.data_ptr(), (order.data_ptr() if order is not None else None)
        logged_z, logged_y = self._logged_z.data_ptr(), self._logged_y.data_ptr()
        for start in starts:
            n = min(size, total - start)
            logged = 4 * self._log_slot(n)  # float32
            # without an order the batch's own rows (int32, float32: 4 bytes each); with one the pool's
            # rows, through the batch's stretch of the order (int64)
            rows, at = (4 * start, None) if order_at is None else (0, order_at + 8 * start)
            status = run(state_ref, rows_at + rows, restaurants_at + rows, clicks_at + rows, at, n,
                         logged_z + logged, logged_y + logged)
            if status != native.DONE:  # nothing trained or logged: give the slot back, say why
                self._logged -= n
                self.kernels.check_step(status)
                native.check_rows(status, users, restaurants, *pool.batch(start, start + n)[:2])
            steps += 1
        return steps

    def _native_state(self) -> native.Trainer:
        """The kernel's view of this trainer, with Adam's hyperparameters as the optimizer's group
        has them now."""
        state, group = self._native, self.group
        state.lr, (state.beta1, state.beta2), state.eps = group["lr"], group["betas"], group["eps"]
        return state

    def _native_step(self, kernels: native.Kernels, clicks: torch.Tensor) -> None:
        n, state = len(clicks), self._native_state()
        logged = 4 * self._log_slot(n)  # float32
        status = kernels.library.train_step(ctypes.byref(state), clicks.float().contiguous().data_ptr(), n,
                                            self._logged_z.data_ptr() + logged, self._logged_y.data_ptr() + logged)
        kernels.check_step(status)

    def _log_slot(self, n: int) -> int:
        """Where the next ``n`` logits and labels go in the loss log (flushed first when full)."""
        if self._logged + n > len(self._logged_z):
            self._flush_loss()
        start, self._logged = self._logged, self._logged + n
        return start

    def _log_logits(self, z: torch.Tensor, clicks: torch.Tensor) -> None:
        start = self._log_slot(len(z))
        self._logged_z[start:start + len(z)].copy_(z)
        self._logged_y[start:start + len(z)].copy_(clicks)

    def _flush_loss(self) -> None:
        if self._logged:
            z, y = self._logged_z[:self._logged], self._logged_y[:self._logged]
            self._loss_sum += float(nn.functional.binary_cross_entropy_with_logits(z, y, reduction="sum"))
            self._loss_rows += self._logged
            self._logged = 0

    def take_loss(self) -> tuple[float, int]:
        """(sum of the per-row losses, rows) of the steps since the last call."""
        self._flush_loss()
        taken = (self._loss_sum, self._loss_rows)
        self._loss_sum, self._loss_rows = 0.0, 0
        return taken
