"""The heads of a group of runs (one condition's seeds) as ONE batched model: one forward, backward and optimiser
step per batch for all of them.

Why: a training step of one head is two small GEMMs plus ~20 tiny ops; run one head per process and the fixed
costs (process start, imports, per-op dispatch) dominate. Stacking the S heads of a condition makes each op S
times larger and the fixed costs are paid once.

How, generically over ANY registered norm: every seed's head is built exactly as a lone run's would be
(``build_head`` under ``torch.manual_seed(seed)``), then each of its parameters and buffers (BatchNorm's running
statistics) is stacked with the other seeds' into one (S, ...) tensor (row s = run s). The forward is
``torch.vmap(torch.func.functional_call)`` of the head module itself over those stacks, so a user's norm trains
through exactly the code ``batch`` does; autograd through it writes the gradient of every run into its own row of
each parameter's ``.grad``. Everything downstream is per run and elementwise (per-run global norms, clipping,
histograms, ``torch.optim.Adam`` — elementwise, so one optimiser over the stack is exactly one Adam per run), so
a run's numbers do not depend on which runs share its stack (tests/test_train.py trains a seed alone and in a
group and compares every tensor bitwise).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from normscape.heads import build_head


def make_adam(params: list[torch.Tensor], lr: float, weight_decay: float) -> torch.optim.Adam:
    """``torch.optim.Adam`` over the stack with ``foreach=True``: its ops are elementwise and round every element
    the same way wherever it sits. Not ``fused=True``: the fused CPU kernel computes the last elements of a tensor
    (its length modulo the vector width) in scalar code that rounds differently from its vector lanes, so a run's
    last parameters would depend on how many runs are stacked before it (measured: the last element of a lone
    run's row differs from the same row in a stack of three after ~250 steps)."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)


def _gemm_layout(stacked: torch.Tensor) -> torch.Tensor:
    """``stacked`` (S, out, in) matrices stored as their transposes' memory, (S, in, out) contiguous: the layout in
    which the batched GEMM's backward (``x^T @ grad_out``) produces a Linear weight's gradient, so autograd hands
    it over as ``.grad`` instead of copying it into the parameter's layout every step. Other shapes: contiguous."""
    if stacked.dim() != 3:
        return stacked.contiguous()
    return stacked.transpose(1, 2).contiguous().transpose(1, 2)


class StackedHeads:
    """S heads of one configuration: each parameter stacked into one contiguous (S, *shape) leaf tensor (row s =
    run s), buffers likewise. Separate contiguous leaves, not views of one flat buffer: autograd then writes each
    gradient in place, where views of a flat (S, P) buffer cost a reshape copy and a concatenation per parameter
    and step (measured: together more than the GEMMs)."""

    def __init__(self, head_config: dict, states: list[dict[str, torch.Tensor]], device: torch.device):
        self.head_config = head_config
        self.device = device
        template = build_head(**head_config)
        self.names = [n for n, _ in template.named_parameters()]
        self.shapes = [tuple(p.shape) for _, p in template.named_parameters()]
        self.sizes = [p.numel() for _, p in template.named_parameters()]
        self.buffer_names = [n for n, _ in template.named_buffers()]
        self.keys = list(template.state_dict())
        # The module whose forward vmap runs; its own tensors are never used (functional_call replaces them all).
        self.module = template.to(device)
        self.params = {
            n: torch.nn.Parameter(_gemm_layout(torch.stack([s[n] for s in states]).to(device))) for n in self.names
        }
        self.buffers = {n: torch.stack([state[n] for state in states]).to(device) for n in self.buffer_names}

    def __len__(self) -> int:
        return next(iter(self.params.values())).shape[0]

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.params.values())

    def grad_row(self, row: int) -> torch.Tensor:
        """Run ``row``'s gradient as one flat (P,) tensor (a copy; parameters in ``names`` order)."""
        return torch.cat([p.grad[row].reshape(-1) for p in self.params.values()])

    def param_row(self, row: int) -> torch.Tensor:
        """Run ``row``'s parameters as one flat (P,) tensor (a copy)."""
        return torch.cat([p.detach()[row].reshape(-1) for p in self.params.values()])

    def scale_grad_row(self, row: int, factor: float) -> None:
        for p in self.params.values():
            p.grad[row].mul_(factor)

    def forward_backward(
        self, xb: torch.Tensor, yb: torch.Tensor, dropout_masks: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One training step's forward and backward for every run: xb (S, B, F), yb (S, B), dropout_masks
        (S, B, hidden) or None. Returns each run's mean loss and correct predictions (S,); the gradients are in
        the parameters' ``.grad`` (overwritten, not accumulated)."""
        self.module.train()

        def head(params, buffers, x, mask):
            return functional_call(self.module, (params, buffers), (x,), {"dropout_mask": mask})

        in_dims = (0, 0, 0, 0 if dropout_masks is not None else None)
        logits = vmap(head, in_dims=in_dims)(self.params, self.buffers, xb, dropout_masks)
        s, b = yb.shape
        losses = F.cross_entropy(logits.reshape(s * b, -1), yb.reshape(-1), reduction="none").view(s, b).mean(1)
        for p in self.params.values():
            p.grad = None
        # d(sum of the runs' losses)/d(row s) is run s's own gradient: the rows share no computation
        losses.sum().backward()
        correct = (logits.detach().argmax(2) == yb).sum(1)
        return losses.detach(), correct

    def state_of(self, row: int) -> dict[str, torch.Tensor]:
        """Run ``row``'s head as a ``state_dict`` (CPU copies), in the module's own key order."""
        tensors = {**self.params, **self.buffers}
        return {key: tensors[key].detach()[row].to("cpu", copy=True) for key in self.keys}

    def model_of(self, row: int) -> torch.nn.Module:
        """A plain head holding run ``row``'s current parameters and buffers (a copy)."""
        model = build_head(**self.head_config)
        model.load_state_dict(self.state_of(row))
        return model.to(self.device)

    def keep(self, rows: list[int]) -> None:
        """Drop every run but ``rows`` (a stopped run): the stack shrinks, the kept rows' values are unchanged."""
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        # the same layout as at the start: the GEMMs' rounding depends on it, and a run's numbers must not change
        self.params = {
            n: torch.nn.Parameter(_gemm_layout(p.detach().index_select(0, index))) for n, p in self.params.items()
        }
        self.buffers = {n: b.index_select(0, index) for n, b in self.buffers.items()}
