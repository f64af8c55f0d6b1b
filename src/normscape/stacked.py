"""The heads of a group of runs (one condition's seeds) as ONE batched model: one forward, backward and optimiser
step per batch for all of them.

Why: a training step of one head is two small GEMMs plus ~20 tiny ops; run one head per process and the fixed
costs (process start, imports, per-op dispatch) dominate. Stacking the S heads of a condition makes each op S
times larger and the fixed costs are paid once.

How, generically over ANY registered norm: every seed's head is built exactly as a lone run's would be
(``build_head`` under ``torch.manual_seed(seed)``), then its parameters are stacked into ONE (S, P) tensor
(one row per run, the parameters concatenated in ``named_parameters`` order) and its buffers (BatchNorm's
running statistics) into (S, ...) tensors. The forward is ``torch.vmap(torch.func.functional_call)`` of the head
module itself over those stacks, so a user's norm trains through exactly the code ``batch`` does; autograd
through it writes the gradient of every run into its own row of ``flat.grad``. Everything downstream is per row
and elementwise (per-run global norms, clipping, histograms, ``torch.optim.Adam`` — elementwise, so one
optimiser over the stack is exactly one Adam per run), so a run's numbers do not depend on which runs share its
stack (tests/test_train.py trains a seed alone and in a group and compares every tensor bitwise).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from normscape.heads import build_head


def make_adam(param: torch.Tensor, lr: float, weight_decay: float) -> torch.optim.Adam:
    """``torch.optim.Adam`` over the stack with ``foreach=True``: its ops are elementwise and round every element
    the same way wherever it sits. Not ``fused=True``: the fused CPU kernel computes the last elements of a tensor
    (its length modulo the vector width) in scalar code that rounds differently from its vector lanes, so a run's
    last parameters would depend on how many runs are stacked before it (measured: the last element of a lone
    run's row differs from the same row in a stack of three after ~250 steps)."""
    return torch.optim.Adam([param], lr=lr, weight_decay=weight_decay, foreach=True)


class StackedHeads:
    """S heads of one configuration, parameters in the rows of ``flat`` (S, P), buffers stacked on dim 0."""

    def __init__(self, head_config: dict, states: list[dict[str, torch.Tensor]], device: torch.device):
        self.head_config = head_config
        self.device = device
        template = build_head(**head_config)
        self.names = [n for n, _ in template.named_parameters()]
        self.shapes = [tuple(p.shape) for _, p in template.named_parameters()]
        self.sizes = [p.numel() for _, p in template.named_parameters()]
        self.buffer_names = [n for n, _ in template.named_buffers()]
        # The module whose forward vmap runs; its own tensors are never used (functional_call replaces them all).
        self.module = template.to(device)
        rows = [torch.cat([state[n].flatten() for n in self.names]) for state in states]
        self.flat = torch.nn.Parameter(torch.stack(rows).to(device))
        self.buffers = {n: torch.stack([state[n] for state in states]).to(device) for n in self.buffer_names}

    def __len__(self) -> int:
        return self.flat.shape[0]

    def parameter_views(self) -> dict[str, torch.Tensor]:
        """Each parameter as an (S, *shape) view of ``flat``: autograd's one split node writes every parameter's
        gradient into ``flat.grad`` with one concatenation."""
        chunks = self.flat.split(self.sizes, dim=1)
        return {n: c.view(len(self), *shape) for n, c, shape in zip(self.names, chunks, self.shapes)}

    def forward_backward(
        self, xb: torch.Tensor, yb: torch.Tensor, dropout_masks: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One training step's forward and backward for every run: xb (S, B, F), yb (S, B), dropout_masks
        (S, B, hidden) or None. Returns each run's mean loss and correct predictions (S,); the gradients are in
        ``flat.grad`` (overwritten, not accumulated)."""
        self.module.train()

        def head(params, buffers, x, mask):
            return functional_call(self.module, (params, buffers), (x,), {"dropout_mask": mask})

        in_dims = (0, 0, 0, 0 if dropout_masks is not None else None)
        logits = vmap(head, in_dims=in_dims)(self.parameter_views(), self.buffers, xb, dropout_masks)
        s, b = yb.shape
        losses = F.cross_entropy(logits.reshape(s * b, -1), yb.reshape(-1), reduction="none").view(s, b).mean(1)
        self.flat.grad = None
        # d(sum of the runs' losses)/d(row s) is run s's own gradient: the rows share no computation
        losses.sum().backward()
        correct = (logits.detach().argmax(2) == yb).sum(1)
        return losses.detach(), correct

    def state_of(self, row: int) -> dict[str, torch.Tensor]:
        """Run ``row``'s head as a ``state_dict`` (CPU copies), in the module's own key order."""
        params = dict(zip(self.names, self.flat.detach()[row].split(self.sizes)))
        state = {}
        for key in build_head(**self.head_config).state_dict():
            if key in params:
                state[key] = params[key].view(self.shapes[self.names.index(key)]).to("cpu", copy=True)
            else:
                state[key] = self.buffers[key][row].to("cpu", copy=True)
        return state

    def model_of(self, row: int) -> torch.nn.Module:
        """A plain head holding run ``row``'s current parameters and buffers (a copy)."""
        model = build_head(**self.head_config)
        model.load_state_dict(self.state_of(row))
        return model.to(self.device)

    def keep(self, rows: list[int]) -> None:
        """Drop every run but ``rows`` (a stopped run): the stack shrinks, the kept rows' values are unchanged."""
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        self.flat = torch.nn.Parameter(self.flat.detach().index_select(0, index))
        self.buffers = {n: b.index_select(0, index) for n, b in self.buffers.items()}
