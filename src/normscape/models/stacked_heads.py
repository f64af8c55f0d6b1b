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

import inspect
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from normscape.models.heads import build_head

# Elements per vector register of float32 on the widest CPU the fused kernel vectorises for (AVX-512: 16).
FUSED_ALIGNMENT = 16
MOMENTS = ("exp_avg", "exp_avg_sq")


def fused_adam_available(device: torch.device) -> bool:
    """Whether this torch offers ``torch.optim.Adam(fused=True)`` on ``device``'s type (CPU: torch >= 2.4)."""
    if "fused" not in inspect.signature(torch.optim.Adam).parameters:
        return False
    return device.type in ("cpu", "cuda")


def lr_blocks(row_lrs: Sequence[float]) -> list[tuple[int, int]]:
    """The [start, stop) row ranges of consecutive equal learning rates."""
    blocks, start = [], 0
    for row in range(1, len(row_lrs) + 1):
        if row == len(row_lrs) or row_lrs[row] != row_lrs[start]:
            blocks.append((start, row))
            start = row
    return blocks


class StackedAdam:
    """``torch.optim.Adam`` over the stacked parameters, each run with its own learning rate, the same
    per-element arithmetic in every row.

    Learning rates: torch.optim gives each parameter group one lr, so the stack's rows are grouped into blocks of
    consecutive runs with equal lr (the trainer orders its rows that way) and each block's rows of every
    parameter are one group's tensors: views of the stacked leaf (no copy), whose ``.grad`` is pointed at the
    same rows of the leaf's gradient before each step. Adam is elementwise, so one optimiser over the blocks is
    exactly one Adam per run at its own lr.

    Kernels: the fused kernel (one pass over each tensor instead of ~7 ``foreach`` passes) vectorises each tensor
    in register-wide blocks from its start and does the remainder in scalar code that rounds differently. A run's
    row starts at a multiple of its own size, so when every row's size is a multiple of the vector width no row
    ever meets the scalar remainder, alone or stacked; parameters whose rows are not (e.g. a 10-class bias) take
    ``foreach=True``, whose elementwise ops round every element the same way wherever it sits. Either way a run's
    numbers do not depend on the runs stacked beside it (tests/test_train.py)."""

    def __init__(self, params: list[torch.Tensor], row_lrs: Sequence[float], weight_decay: float, device: torch.device):
        self.params, self.row_lrs = params, [float(lr) for lr in row_lrs]
        self.blocks = lr_blocks(self.row_lrs)
        fused = fused_adam_available(device)
        self.views = [[p.detach()[start:stop] for p in params] for start, stop in self.blocks]
        groups = []
        for (start, _), views in zip(self.blocks, self.views):
            lr = self.row_lrs[start]
            aligned = [v for v, p in zip(views, params) if fused and p[0].numel() % FUSED_ALIGNMENT == 0]
            rest = [v for v, p in zip(views, params) if not (fused and p[0].numel() % FUSED_ALIGNMENT == 0)]
            groups += [{"params": aligned, "lr": lr, "fused": True, "foreach": False}] if aligned else []
            groups += [{"params": rest, "lr": lr, "fused": False, "foreach": True}] if rest else []
        self.optimizer = torch.optim.Adam(groups, lr=self.row_lrs[0], weight_decay=weight_decay)

    def step(self) -> None:
        """One Adam step of every run, from the gradients in the stacked parameters' ``.grad``."""
        for (start, stop), views in zip(self.blocks, self.views):
            for p, view in zip(self.params, views):
                view.grad = p.grad[start:stop]
        self.optimizer.step()

    def hyperparameters(self, row: int) -> dict:
        """Run ``row``'s Adam settings as a torch.optim param group holds them (lr, betas, eps, weight_decay)."""
        group = self.optimizer.param_groups[0]
        return {**{k: v for k, v in group.items() if k != "params"}, "lr": self.row_lrs[row]}

    @property
    def started(self) -> bool:
        return all(self.optimizer.state.get(v) for views in self.views for v in views)

    def moments(self) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]] | None:
        """(step, per parameter {"exp_avg", "exp_avg_sq"} stacked over every row, leaf-shaped), or None before
        the first step."""
        if not self.started:
            return None
        state = self.optimizer.state
        per_param = []
        for i in range(len(self.params)):
            blocks = [state[views[i]] for views in self.views]
            per_param.append(
                {k: blocks[0][k] if len(blocks) == 1 else torch.cat([b[k] for b in blocks]) for k in MOMENTS}
            )
        return state[self.views[0][0]]["step"], per_param

    def load_moments(self, step: torch.Tensor, moments: list[dict[str, torch.Tensor]]) -> None:
        """Set every run's Adam state: ``moments`` per parameter {"exp_avg", "exp_avg_sq"} stacked over the rows."""
        state = self.optimizer.state_dict()
        # state_dict numbers the tensors in the order of the optimiser's groups
        position = {id(v): i for i, v in enumerate(v for g in self.optimizer.param_groups for v in g["params"])}
        # each moment in its tensor's memory layout: the fused CPU kernel walks params, grads and moments as flat
        # memory and silently mixes elements up when their strides differ (docs/upstream/torch-fused-adam-
        # strides.md); autograd hands over grads in the parameter's layout
        state["state"] = {
            position[id(view)]: {
                "step": step.clone(),
                **{k: torch.empty_like(view).copy_(m[k][start:stop]) for k in MOMENTS},
            }
            for (start, stop), views in zip(self.blocks, self.views)
            for view, m in zip(views, moments)
        }
        self.optimizer.load_state_dict(state)


class StackedHeads:
    """S heads of one configuration: each parameter stacked into one contiguous leaf tensor (row s = run s), buffers
    likewise. Separate contiguous leaves, not views of one flat buffer: autograd then writes each gradient in
    place, where views of a flat (S, P) buffer cost a reshape copy and a concatenation per parameter and step.

    Matrices (Linear weights, (out, in) per run) are stored as their transposes, one contiguous (S, in, out) leaf,
    and handed to the module as its transposed view: (S, in, out) is the layout in which the batched GEMM's
    backward (``x^T @ grad_out``) produces the gradient, so autograd stores it as ``.grad`` without a copy, and
    leaf, gradient and Adam's moments are all contiguous, which the fused optimiser needs to run at full speed
    (on other strides it copies every tensor in and out per step). :meth:`module_shaped` gives any per-parameter
    stack (values, gradients, moments) in the module's shapes."""

    def __init__(self, head_config: dict, states: list[dict[str, torch.Tensor]], device: torch.device):
        self.head_config = head_config
        self.device = device
        template = build_head(**head_config)
        self.names = [n for n, _ in template.named_parameters()]
        self.shapes = [tuple(p.shape) for _, p in template.named_parameters()]
        self.sizes = [p.numel() for _, p in template.named_parameters()]
        self.transposed = {n for n, shape in zip(self.names, self.shapes) if len(shape) == 2}
        self.buffer_names = [n for n, _ in template.named_buffers()]
        self.keys = list(template.state_dict())
        # The module whose forward vmap runs; its own tensors are never used (functional_call replaces them all).
        self.module = template.to(device)
        self.params = {
            n: torch.nn.Parameter(self.leaf_shaped(n, torch.stack([s[n] for s in states]).to(device)))
            for n in self.names
        }
        self.buffers = {n: torch.stack([state[n] for state in states]).to(device) for n in self.buffer_names}

    def leaf_shaped(self, name: str, stacked: torch.Tensor) -> torch.Tensor:
        """A module-shaped (S, *shape) stack of parameter ``name`` in its leaf's layout (contiguous; a copy)."""
        if name in self.transposed:
            return stacked.transpose(1, 2).contiguous()
        return stacked.contiguous()

    def module_shaped(self, name: str, stacked: torch.Tensor) -> torch.Tensor:
        """A leaf-shaped stack of parameter ``name`` (its values, gradient or a moment) in the module's shapes
        (a view)."""
        return stacked.transpose(1, 2) if name in self.transposed else stacked

    def __len__(self) -> int:
        return next(iter(self.params.values())).shape[0]

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.params.values())

    def _flat_row(self, tensors: list[torch.Tensor], row: int) -> torch.Tensor:
        return torch.cat([self.module_shaped(n, t)[row].reshape(-1) for n, t in zip(self.names, tensors)])

    def grad_row(self, row: int) -> torch.Tensor:
        """Run ``row``'s gradient as one flat (P,) tensor (a copy; parameters in ``names`` order)."""
        return self._flat_row(self.grads(), row)

    def param_row(self, row: int) -> torch.Tensor:
        """Run ``row``'s parameters as one flat (P,) tensor (a copy)."""
        return self._flat_row([p.detach() for p in self.params.values()], row)

    def moment_row(self, moments: list[torch.Tensor], row: int) -> torch.Tensor:
        """Run ``row``'s slice of one optimiser moment (one leaf-shaped stack per parameter) as a flat (P,) tensor."""
        return self._flat_row(moments, row)

    def grads(self) -> list[torch.Tensor]:
        """Every parameter's stacked gradient, leaf-shaped, in ``names`` order."""
        return [p.grad for p in self.params.values()]

    def grad_norms(self) -> torch.Tensor:
        """(S,) each run's global gradient norm (over all its parameters), as one computation for the stack."""
        per_param = [
            torch.linalg.vector_norm(g, dim=tuple(range(1, g.dim()))) if g.dim() > 1 else g.abs() for g in self.grads()
        ]
        return torch.linalg.vector_norm(torch.stack(per_param, 1), dim=1)

    def scale_grads(self, factors: torch.Tensor) -> None:
        """Multiply run s's gradient by ``factors[s]`` (S,)."""
        for g in self.grads():
            g.mul_(factors.view(-1, *([1] * (g.dim() - 1))))

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
        params = {n: self.module_shaped(n, p) for n, p in self.params.items()}
        logits = vmap(head, in_dims=in_dims)(params, self.buffers, xb, dropout_masks)
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
        tensors = {**{n: self.module_shaped(n, p.detach()) for n, p in self.params.items()}, **self.buffers}
        return {key: tensors[key][row].to("cpu").clone(memory_format=torch.contiguous_format) for key in self.keys}

    def model_of(self, row: int) -> torch.nn.Module:
        """A plain head holding run ``row``'s current parameters and buffers (a copy)."""
        with torch.random.fork_rng(devices=[]):  # building draws an init: a probe reading it must not move the RNG
            model = build_head(**self.head_config)
        model.load_state_dict(self.state_of(row))
        return model.to(self.device)

    def keep(self, rows: list[int]) -> None:
        """Drop every run but ``rows`` (a stopped run): the stack shrinks, the kept rows' values are unchanged."""
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        # the same layout as at the start: the GEMMs' rounding depends on it, and a run's numbers must not change
        self.params = {n: torch.nn.Parameter(p.detach().index_select(0, index)) for n, p in self.params.items()}
        self.buffers = {n: b.index_select(0, index) for n, b in self.buffers.items()}
