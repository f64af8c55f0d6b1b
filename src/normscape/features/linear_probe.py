"""Linear probe: how much a feature cache knows, as the test accuracy of a multinomial logistic regression.

    python -m normscape.features.linear_probe results/features/features.h5 [--train-samples 5000]

Features are standardised with training statistics; the L2 strength is picked on a held-out 20% of the
training rows, then the model is refit on all of them (L-BFGS, full batch). A sanity check that the frozen
backbone's features are informative: pretrained features score far above a random-init backbone's (run it on
both caches; the numbers depend on the data and the number of training rows).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from normscape.features import store

L2_GRID = (1e-4, 1e-3, 1e-2)


def fit_logreg(x: torch.Tensor, y: torch.Tensor, l2: float, iters: int = 200) -> torch.Tensor:
    w = torch.zeros(x.shape[1] + 1, int(y.max()) + 1, requires_grad=True)
    xb = torch.cat([x, torch.ones(len(x), 1)], 1)
    opt = torch.optim.LBFGS([w], lr=1, max_iter=iters, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(xb @ w, y) + l2 * (w[:-1] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def accuracy(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(((torch.cat([x, torch.ones(len(x), 1)], 1) @ w).argmax(1) == y).float().mean())


def linear_probe(path: str, train_samples: int | None = None, seed: int = 0) -> dict:
    xtr, ytr = store.load_split(path, "train")
    xte, yte = store.load_split(path, "test")
    if train_samples and train_samples < len(xtr):
        keep = np.random.default_rng(seed).choice(len(xtr), train_samples, replace=False)
        xtr, ytr = xtr[keep], ytr[keep]
    mean, std = xtr.mean(0), xtr.std(0) + 1e-8
    xtr_t = torch.from_numpy((xtr - mean) / std)
    xte_t = torch.from_numpy((xte - mean) / std)
    ytr_t, yte_t = torch.from_numpy(ytr).long(), torch.from_numpy(yte).long()
    n_fit = int(0.8 * len(xtr_t))
    scores = {
        l2: accuracy(fit_logreg(xtr_t[:n_fit], ytr_t[:n_fit], l2), xtr_t[n_fit:], ytr_t[n_fit:]) for l2 in L2_GRID
    }
    best = max(scores, key=scores.get)
    w = fit_logreg(xtr_t, ytr_t, best)
    return {"train_samples": len(xtr_t), "l2": best, "holdout_acc": scores, "test_acc": accuracy(w, xte_t, yte_t)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("features")
    ap.add_argument("--train-samples", type=int, default=None)
    args = ap.parse_args()
    print(linear_probe(args.features, args.train_samples))


if __name__ == "__main__":
    main()
