"""The head's training step after its first layer as one native call, instead of ~20 small torch ops + autograd.

Per step the trainer computes ``z = fc1(x)`` and, after the backward, fc1's weight gradient ``dz^T x``: two GEMMs
that torch runs at the core's peak. Everything between — norm, ReLU, fc2, cross-entropy and their backward — is
~1 MFLOP on a 64 x 256 batch, yet costs a third of a step in torch, almost all of it dispatch and autograd
bookkeeping. :class:`HeadStep` hands it to ``normscape._headstep`` (C, built at install) in one call that
writes every gradient straight into the trainer's flat buffer and returns the loss and the number of correct
predictions.

Which norms: each registered norm names its ``train_rule`` (normscape/norms.py): ``identity`` (no norm),
``batch`` (BatchNorm in training mode, running statistics updated as torch does), ``moments`` (LayerNorm =
1 group, GroupNorm), ``frn`` (FRN + TLU, fixed or learned eps). A norm without one, a module configured
differently from what its rule computes (e.g. no affine), dropout > 0, a GPU or a missing build: the trainer
uses torch's autograd path (:meth:`HeadStep.build` returns None and says why); so does a step taken in eval mode
or after the norm was changed to something the kernel does not compute (the step returns None). Both paths
compute the same function; they agree to float32 rounding (tests/test_headstep.py, for every rule, batch after
batch), and each is bit-reproducible on one machine. For FRN the native backward uses the closed form
d(z r)/dz = eps r^3 (r = 1/sqrt(z^2 + eps)); autograd sums r - z^2 r^3, which cancels to rounding noise where
|z| >> sqrt(eps): both are float32-close on the gradient's scale, the native one also on those tiny entries.
"""

from __future__ import annotations

import logging

import torch

from normscape.frn import FilterResponseNorm
from normscape.norms import TRAIN_RULES, get_norm

try:
    from normscape import _headstep as _native
except ImportError:  # not built (no C compiler at install): the trainer's torch path
    _native = None

log = logging.getLogger(__name__)

RULE_CODES = {rule: code for code, rule in enumerate(TRAIN_RULES)}  # the C kernel's numbering


def _norm_settings(norm: torch.nn.Module, rule: str) -> tuple[dict, str | None]:
    """The kernel's view of the norm module (params, running, groups, eps, momentum), or why it cannot run it."""
    nn = torch.nn
    if rule == "identity":
        if not isinstance(norm, nn.Identity):
            return {}, "not an Identity"
        return {"params": (), "running": (), "groups": 1, "eps": 0.0}, None
    if rule == "batch":
        if not (isinstance(norm, nn.BatchNorm1d) and norm.affine and norm.track_running_stats):
            return {}, "BatchNorm without affine parameters or running statistics"
        if norm.momentum is None:
            return {}, "BatchNorm with a cumulative running average (momentum=None)"
        return {
            "params": (norm.weight, norm.bias),
            "running": (norm.running_mean, norm.running_var),
            "groups": 1,
            "eps": float(norm.eps),
            "momentum": float(norm.momentum),
        }, None
    if rule == "moments":
        if isinstance(norm, nn.LayerNorm) and norm.elementwise_affine and norm.bias is not None:
            if len(norm.normalized_shape) != 1:
                return {}, "LayerNorm over more than the hidden units"
            groups = 1
        elif isinstance(norm, nn.GroupNorm) and norm.affine:
            groups = norm.num_groups
        else:
            return {}, "a moments norm that is neither LayerNorm nor GroupNorm with affine parameters"
        return {"params": (norm.weight, norm.bias), "running": (), "groups": groups, "eps": float(norm.eps)}, None
    if rule == "frn":
        if not isinstance(norm, FilterResponseNorm):
            return {}, "not a FilterResponseNorm"
        params = (norm.weight, norm.bias, norm.tau) + ((norm.eps_l,) if norm.learnable_eps else ())
        return {"params": params, "running": (), "groups": 1, "eps": float(norm.eps)}, None
    return {}, f"unknown train rule {rule!r}"


class HeadStep:
    """``step(xb, yb) -> (mean loss, correct)``: forward and backward of one batch through ``model`` (a
    :class:`normscape.heads.ClassifierHead` in training mode whose ``.grad`` tensors are the trainer's flat
    gradient views), every gradient written (none accumulated)."""

    def __init__(self, model: torch.nn.Module, rule: str, settings: dict):
        self.model, self.rule, self.norm = model, rule, model.norm
        self.code = RULE_CODES[rule]
        # numpy views of the parameters, running statistics and gradient buffers: the trainer and its optimiser
        # update all of them in place, so the views stay valid for the whole run
        self.params = tuple(p.detach().numpy() for p in settings["params"])
        self.grads = tuple(p.grad.numpy() for p in settings["params"])
        self.running = tuple(t.numpy() for t in settings["running"])
        self.w1, self.b1 = model.fc1.weight.detach(), model.fc1.bias.detach()
        self.grad_w1, self.grad_b1 = model.fc1.weight.grad, model.fc1.bias.grad.numpy()
        self.w2, self.b2 = model.fc2.weight.detach().numpy(), model.fc2.bias.detach().numpy()
        self.grad_w2, self.grad_b2 = model.fc2.weight.grad.numpy(), model.fc2.bias.grad.numpy()
        self.dz = torch.empty(0, self.w1.shape[0], dtype=torch.float32)

    @classmethod
    def build(cls, model: torch.nn.Module) -> HeadStep | None:
        """The native step for ``model``, or None (logged) where the trainer must use torch's autograd path."""
        rule = get_norm(model.norm_name).train_rule
        why = None
        if _native is None:
            why = "the native kernel normscape._headstep is not built (reinstall with a C compiler: pip install -e .)"
        elif rule is None:
            why = f"norm {model.norm_name!r} has no train_rule in normscape/norms.py"
        elif model.drop.p > 0:
            why = "dropout > 0"
        elif model.fc1.weight.device.type != "cpu" or model.fc1.weight.dtype != torch.float32:
            why = "the head is not float32 on the CPU"
        elif any(p.grad is None for p in model.parameters()):
            why = "the parameters have no gradient buffers"
        settings: dict = {}
        if why is None:
            settings, why = _norm_settings(model.norm, rule)
        if why is not None:
            log.info("training step through torch autograd (slower, same numbers to float rounding): %s", why)
            return None
        return cls(model, rule, settings)

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[float, int] | None:
        """(mean loss, correct predictions), or None where the step does not apply NOW — the model in eval mode,
        its norm replaced or set to something the kernel does not compute — and the caller must use autograd.
        The norm's settings (eps, momentum, groups) are read from the module at every call: a user may change
        them on a built model."""
        settings, why = _norm_settings(self.model.norm, self.rule)
        if why is not None or not self.model.training or self.model.norm is not self.norm:
            return None
        n = len(xb)
        if self.dz.shape[0] < n:
            self.dz = torch.empty(n, self.w1.shape[0], dtype=torch.float32)
        dz = self.dz[:n]
        xb, yb = xb.contiguous(), yb.contiguous()  # no copies for the trainer's batches
        z = torch.addmm(self.b1, xb, self.w1.t())
        loss, correct = _native.step(
            self.code,
            int(settings["groups"]),
            float(settings["eps"]),
            float(settings.get("momentum", 0.0)),
            z.numpy(),
            yb.numpy(),
            self.w2,
            self.b2,
            self.params,
            self.running,
            dz.numpy(),
            self.grad_b1,
            self.grad_w2,
            self.grad_b2,
            self.grads,
        )
        torch.mm(dz.t(), xb, out=self.grad_w1)  # fc1's weight gradient, as the torch path computes it
        if self.rule == "batch":
            self.norm.num_batches_tracked.add_(1)
        return loss, correct
