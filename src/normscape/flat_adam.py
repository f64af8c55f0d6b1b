"""Adam over the trainer's one flat parameter tensor: torch's fused kernel, without torch.optim's machinery.

``torch.optim.Adam(fused=True).step()`` on one tensor ends in ONE ``torch._fused_adam_`` kernel, but it gets
there through Python bookkeeping that costs more per step than the head's small ops (grouping tensors by
device, grad-scaler and hook plumbing), and constructing any ``torch.optim`` optimiser imports
``torch._dynamo`` — a fixed cost paid by every training job. :class:`FlatAdam` calls the same kernel with the
same arguments, so its parameters and state are bit for bit those of ``torch.optim.Adam(fused=True)`` (the plain
path it must equal; tests/test_flat_adam.py compares them step by step), and its ``state_dict`` has
torch.optim.Adam's layout, so checkpoints load in either.

Only what the trainer uses is supported: one parameter tensor, no amsgrad, maximize, capturable or grad scaler.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.hooks import RemovableHandle


class FlatAdam:
    """``torch.optim.Adam(params=[param], ..., fused=True)`` for one flat tensor, with the same interface subset
    the trainer, the W&B watcher (``register_step_pre_hook``) and the smoothness probe (``param_groups``,
    ``state``) use."""

    def __init__(
        self,
        param: torch.Tensor,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        self.param = param
        self.param_groups = [
            {
                "lr": lr,
                "betas": tuple(betas),
                "eps": eps,
                "weight_decay": weight_decay,
                "amsgrad": False,
                "maximize": False,
                "foreach": None,
                "capturable": False,
                "differentiable": False,
                "fused": True,
                "decoupled_weight_decay": False,
                "params": [param],
            }
        ]
        # As torch.optim: empty until the first step creates it, keyed by the parameter.
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}
        self._pre_hooks: OrderedDict[int, Callable] = OrderedDict()

    def register_step_pre_hook(self, hook: Callable) -> RemovableHandle:
        """``hook(optimizer, args, kwargs)`` before every step (torch.optim's signature)."""
        handle = RemovableHandle(self._pre_hooks)
        self._pre_hooks[handle.id] = hook
        return handle

    def _param_state(self) -> dict[str, torch.Tensor]:
        state = self.state.get(self.param)
        if state is None:  # torch.optim.Adam's lazy initialisation (fused: a float32 step counter)
            state = self.state[self.param] = {
                "step": torch.zeros((), dtype=torch.float32, device=self.param.device),
                "exp_avg": torch.zeros_like(self.param, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(self.param, memory_format=torch.preserve_format),
            }
        return state

    @torch.no_grad()
    def step(self) -> None:
        for hook in list(self._pre_hooks.values()):
            hook(self, (), {})
        if self.param.grad is None:
            return
        group, state = self.param_groups[0], self._param_state()
        beta1, beta2 = group["betas"]
        state["step"].add_(1)
        torch._fused_adam_(
            [self.param],
            [self.param.grad],
            [state["exp_avg"]],
            [state["exp_avg_sq"]],
            [],
            [state["step"]],
            amsgrad=False,
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
            grad_scale=None,
            found_inf=None,
        )

    def state_dict(self) -> dict[str, Any]:
        """torch.optim.Adam's layout: parameters referred to by index."""
        group = {key: value for key, value in self.param_groups[0].items() if key != "params"}
        state = self.state.get(self.param)
        return {"state": {0: dict(state)} if state is not None else {}, "param_groups": [{**group, "params": [0]}]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """A state_dict of this class or of ``torch.optim.Adam`` over one parameter of the same shape."""
        groups = state_dict["param_groups"]
        if len(groups) != 1 or groups[0]["params"] != [0]:
            raise ValueError("FlatAdam loads the state of an optimiser over exactly one parameter")
        for flag in ("amsgrad", "maximize", "capturable"):
            if groups[0].get(flag):
                raise ValueError(f"FlatAdam does not support {flag}=True")
        saved = state_dict["state"].get(0)
        if saved is not None and saved["exp_avg"].shape != self.param.shape:  # checked before anything changes
            raise ValueError(
                f"optimiser state of shape {tuple(saved['exp_avg'].shape)} for a parameter of "
                f"shape {tuple(self.param.shape)}"
            )
        self.param_groups[0].update({k: v for k, v in groups[0].items() if k != "params"})
        self.param_groups[0]["betas"] = tuple(self.param_groups[0]["betas"])
        if saved is None:
            self.state = {}
            return
        like = {"dtype": self.param.dtype, "device": self.param.device}
        self.state = {
            self.param: {
                "step": saved["step"].to(dtype=torch.float32, device=self.param.device).clone(),
                "exp_avg": saved["exp_avg"].to(**like).clone(),
                "exp_avg_sq": saved["exp_avg_sq"].to(**like).clone(),
            }
        }
