"""Which pool images to query, and which the model may label itself: pure rules over predicted
probabilities (and penultimate-layer features), with no files and no model. A query of a real
pool (toolkit/pool.py) and the simulation (toolkit/simulation.py) both choose through them.

Acquisition: a score for every pool image, the K highest are queried.
  entropy           -sum_c p_c log p_c of the predicted probabilities (nats)
  margin            1 - (p_top1 - p_top2): a small margin between the two likeliest classes scores high
  least-confidence  1 - p_top1
  random            a uniform draw, reproducible by --seed
  kcenter           greedy core-set (Sener & Savarese, ICLR 2018) on the penultimate-layer features:
                    each pick is the pool image farthest from the training images and the picks so
                    far; its score is that distance
With balancing the budget is spread over the predicted classes in inverse proportion to their
training counts (`balanced_quotas`), and each class's share goes to its highest-scoring images.

Pseudo-labels: FixMatch's confidence threshold (Sohn et al., NeurIPS 2020: keep the images whose
top probability is at least tau, default 0.95), then CReST's class-rebalancing rate (Wei et al.,
CVPR 2021, "CReST: A Class-Rebalancing Self-Training Framework for Imbalanced Semi-Supervised
Learning", eq. 2): with the classes sorted by training count N_1 >= ... >= N_L, the l-th keeps
its most confident floor(mu_l * m_l) of its m_l candidates, mu_l = (N_{L+1-l} / N_1) ** alpha.
The rarest class keeps all of its candidates, the most frequent the fraction
(N_L / N_1) ** alpha, so pseudo-labels do not swamp the tail; alpha = 1/3 as in CReST (the
reference implementation in Microsoft's USB writes it as 1 / crest_alpha with crest_alpha = 3);
alpha = 0 is the FixMatch threshold alone.
"""
import math

import numpy as np
import torch
from scipy.special import entr

from toolkit.cli import UserError

ACQUISITIONS = ("entropy", "margin", "least-confidence", "random", "kcenter")
BALANCED = "-balanced"  # a strategy name's suffix in --simulate: entropy-balanced
PSEUDO_THRESHOLD = 0.95
PSEUDO_ALPHA = 1 / 3


# ---------------------------------------------------------------- acquisition

def acquisition_scores(acquisition: str, probs: np.ndarray, seed: int = 0) -> np.ndarray:
    """One score per row of `probs` (N, K), higher = query first (kcenter is not a per-image
    score: see kcenter_greedy)."""
    probs = np.asarray(probs, dtype=np.float64)
    if acquisition == "entropy":
        return entr(probs).sum(axis=1)
    if acquisition == "margin":
        top = -np.sort(-probs, axis=1)
        second = top[:, 1] if probs.shape[1] > 1 else np.zeros(len(probs))
        return 1.0 - (top[:, 0] - second)
    if acquisition == "least-confidence":
        return 1.0 - probs.max(axis=1)
    if acquisition == "random":
        return np.random.default_rng(seed).random(len(probs))
    raise ValueError(f"no per-image score for acquisition {acquisition!r}")


def balanced_quotas(train_counts, available, budget: int) -> np.ndarray:
    """Queries per class: min(budget, pool size) spread over the classes in proportion to
    1 / training count, no class given more than the pool images predicted as it (`available`);
    what a full class cannot take goes to the others in the same proportion (water-filling), and
    the integers are rounded by largest remainder (ties: the rarer class first), so they sum to
    the budget exactly."""
    counts = np.asarray(train_counts, dtype=np.float64)
    available = np.asarray(available, dtype=np.int64)
    weights = 1.0 / np.maximum(counts, 1.0)
    total = int(min(budget, available.sum()))
    full = np.zeros(len(counts), dtype=bool)
    while True:
        open_ = ~full & (available > 0)
        remaining = total - available[full].sum()
        share = np.zeros(len(counts))
        if open_.any():
            share[open_] = remaining * weights[open_] / weights[open_].sum()
        newly_full = open_ & (share >= available)
        if not newly_full.any():
            break
        full |= newly_full
    quotas = np.where(full, available, np.floor(share + 1e-9).astype(np.int64))
    left = total - int(quotas.sum())
    order = sorted(np.flatnonzero(open_), key=lambda c: (-(share[c] - quotas[c]), -weights[c], c))
    for c in order[:left]:
        quotas[c] += 1
    return quotas


def min_distances(points: torch.Tensor, centres: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Euclidean distance of every point to its nearest centre."""
    if len(centres) == 0:
        return torch.full((len(points),), math.inf, dtype=points.dtype)
    return torch.cat([torch.cdist(part, centres).min(dim=1).values for part in points.split(chunk)]) \
        if len(points) else torch.empty(0, dtype=points.dtype)


def kcenter_greedy(features, labelled_features=None, budget: int = 1, classes=None, quotas=None) -> tuple:
    """Greedy k-center (core-set) selection: (picked indices in pick order, the distance of each
    to the nearest labelled or earlier-picked point when it was picked). Without labelled points
    the first pick is the point farthest from the mean. With `quotas`, a point of class
    `classes[i]` is only picked while its class has quota left."""
    points = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    budget = min(int(budget), len(points))
    first_pick = labelled_features is None or not len(labelled_features)
    if first_pick:
        distance = (points - points.mean(dim=0)).norm(dim=1)
    else:
        distance = min_distances(points, torch.as_tensor(np.asarray(labelled_features), dtype=torch.float64))
    left = None if quotas is None else np.array(quotas, dtype=np.int64)
    available = torch.ones(len(points), dtype=torch.bool)
    picked, scores = [], []
    while len(picked) < budget:
        allowed = available.clone()
        if left is not None:
            allowed &= torch.as_tensor(left[np.asarray(classes)] > 0)
        if not allowed.any():
            break
        index = int(torch.where(allowed, distance, torch.tensor(-math.inf, dtype=torch.float64)).argmax())
        picked.append(index)
        scores.append(float(distance[index]))
        available[index] = False
        if left is not None:
            left[classes[index]] -= 1
        to_pick = (points - points[index]).norm(dim=1)
        distance = to_pick if first_pick else torch.minimum(distance, to_pick)
        first_pick = False
    return np.array(picked, dtype=np.int64), np.array(scores)


def select(acquisition: str, probs, budget: int, seed: int = 0, features=None, labelled_features=None,
           quotas=None) -> tuple:
    """The images to query: (indices, scores), highest score first, min(budget, N) of them. With
    `quotas` (balanced_quotas of the predicted classes), at most quotas[c] of predicted class c."""
    probs = np.asarray(probs, dtype=np.float64)
    budget = min(int(budget), len(probs))
    predicted = probs.argmax(axis=1)
    if acquisition == "kcenter":
        if features is None:
            raise ValueError("kcenter needs the pool's features")
        return kcenter_greedy(features, labelled_features, budget, predicted, quotas)
    scores = acquisition_scores(acquisition, probs, seed)
    order = np.argsort(-scores, kind="stable")
    if quotas is None:
        order = order[:budget]
    else:
        left, picked = np.array(quotas, dtype=np.int64), []
        for index in order:
            if len(picked) == budget:
                break
            if left[predicted[index]] > 0:
                left[predicted[index]] -= 1
                picked.append(index)
        order = np.array(picked, dtype=np.int64)
    return order, scores[order]


def parse_strategy(name: str) -> tuple:
    """A simulation strategy's (acquisition, balanced): 'entropy' or 'entropy-balanced'."""
    balanced = name.endswith(BALANCED)
    acquisition = name[:-len(BALANCED)] if balanced else name
    if acquisition not in ACQUISITIONS:
        raise UserError(f"unknown strategy {name!r}: use one of {', '.join(ACQUISITIONS)}, each optionally "
                        f"with the suffix {BALANCED} (e.g. entropy{BALANCED})")
    return acquisition, balanced


# ---------------------------------------------------------------- pseudo-labels

def crest_rates(train_counts, alpha: float = PSEUDO_ALPHA) -> np.ndarray:
    """CReST's per-class rate mu: the class of count rank l (1 = most frequent) keeps
    (N_{L+1-l} / N_1) ** alpha of its pseudo-label candidates."""
    counts = np.asarray(train_counts, dtype=np.float64)
    order = np.argsort(-counts, kind="stable")
    rates = np.empty(len(counts))
    rates[order] = (counts[order[::-1]] / max(counts[order[0]], 1.0)) ** alpha
    return rates


def pseudo_labels(probs, threshold: float, train_counts, alpha: float = PSEUDO_ALPHA, exclude=()) -> tuple:
    """(indices, labels) of the pseudo-labelled rows of `probs`: top probability >= threshold
    (FixMatch), not in `exclude`, then per predicted class its most confident
    floor(crest_rates[c] * candidates) (CReST). Most confident first."""
    probs = np.asarray(probs, dtype=np.float64)
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    candidate = confidence >= threshold
    candidate[np.asarray(list(exclude), dtype=np.int64)] = False
    rates = crest_rates(train_counts, alpha)
    kept = []
    for c in range(probs.shape[1]):
        members = np.flatnonzero(candidate & (predicted == c))
        members = members[np.argsort(-confidence[members], kind="stable")]
        kept += members[:int(math.floor(rates[c] * len(members) + 1e-9))].tolist()
    kept = np.array(sorted(kept, key=lambda i: (-confidence[i], i)), dtype=np.int64)
    return kept, predicted[kept]
