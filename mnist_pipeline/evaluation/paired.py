"""Two models compared on the same labelled images: McNemar's exact test and per-digit deltas.

Pure logic on per-image correctness (numpy arrays), torch-free. `compare` judges a challenger
against production under the promotion policy (registry.promotion): "better" needs a significant
gain of at least min_gain, "worse" is a significant loss or (where asked) a digit whose accuracy
drops by more than per_digit_tolerance; anything else is "same".
"""

from __future__ import annotations

import numpy as np

from mnist_pipeline.core.reports import Comparison
from mnist_pipeline.core.service_params import PromotionParams


def mcnemar_p(n01: int, n10: int) -> float:
    """McNemar's exact two-sided p-value: the binomial(n01 + n10, 1/2) probability of a split at
    least as uneven as this one (1.0 when no image is discordant)."""
    if n01 < 0 or n10 < 0:
        raise ValueError(f"discordant counts must be >= 0, got {n01} and {n10}")
    n, k = n01 + n10, min(n01, n10)
    tail, term = 0, 1  # term = C(n, i), exact integers
    for i in range(k + 1):
        tail += term
        term = term * (n - i) // (i + 1)
    return min(1.0, 2 * tail / 2**n)


def per_digit_deltas(
    champion: np.ndarray, challenger: np.ndarray, labels: np.ndarray
) -> dict[str, float]:
    """Challenger minus champion accuracy on the images of each true digit present."""
    deltas = {}
    for digit in np.unique(labels).tolist():
        mine = labels == digit
        gained = int(challenger[mine].sum()) - int(champion[mine].sum())
        deltas[str(digit)] = gained / int(mine.sum())
    return deltas


def compare(
    champion: np.ndarray,
    challenger: np.ndarray,
    labels: np.ndarray,
    policy: PromotionParams,
    per_digit_check: bool = True,
) -> Comparison:
    """Judge the challenger against the champion from both models' per-image correctness (bool
    arrays aligned with `labels`); `per_digit_check`: a digit dropping beyond the tolerance makes
    it "worse"."""
    champion, challenger = np.asarray(champion, bool), np.asarray(challenger, bool)
    if not champion.shape == challenger.shape == np.shape(labels) or champion.ndim != 1:
        raise ValueError(
            f"per-image answers do not line up: {champion.shape}, {challenger.shape} "
            f"and {np.shape(labels)} labels"
        )
    images = len(labels)
    if not images:
        raise ValueError("no images to compare on")
    n01 = int((champion & ~challenger).sum())
    n10 = int((challenger & ~champion).sum())
    p_value = mcnemar_p(n01, n10)
    gain = (n10 - n01) / images
    deltas = per_digit_deltas(champion, challenger, labels)
    worst = min(deltas, key=lambda d: deltas[d])
    significant = p_value < policy.significance
    counts = f"n10 {n10} / n01 {n01}, p {p_value:.3g}"
    if per_digit_check and -deltas[worst] > policy.per_digit_tolerance:
        verdict = "worse"
        why = f"digit {worst} drops {-deltas[worst]:.4f} > {policy.per_digit_tolerance:g}"
    elif significant and gain < 0:
        verdict, why = "worse", f"{counts} < {policy.significance:g}"
    elif significant and gain > 0 and gain >= policy.min_gain:
        verdict, why = "better", f"{counts} < {policy.significance:g}"
    elif significant and gain > 0:
        verdict, why = "same", f"gain {gain:.4f} < min_gain {policy.min_gain:g}; {counts}"
    else:
        verdict, why = "same", counts
    return Comparison(
        images=images,
        paired=True,
        challenger_accuracy=int(challenger.sum()) / images,
        champion_accuracy=int(champion.sum()) / images,
        gain=gain,
        n01=n01,
        n10=n10,
        p_value=p_value,
        per_digit=deltas,
        verdict=verdict,
        why=why,
    )


def unpaired(ours: float, theirs: float, images: int, policy: PromotionParams) -> Comparison:
    """Only the recorded accuracies (a challenger without per-image answers): "better" when
    ours is above theirs by min_gain at least (a tie is no evidence, also with min_gain 0),
    "worse" below theirs, "same" otherwise; no test, no per-digit check."""
    gain = ours - theirs
    reaches = gain > 0 and gain >= policy.min_gain - 1e-12  # 0.9128 - 0.9028 < 0.01 in floats
    verdict = "better" if reaches else "worse" if gain < 0 else "same"
    return Comparison(
        images=images,
        paired=False,
        challenger_accuracy=ours,
        champion_accuracy=theirs,
        gain=gain,
        verdict=verdict,
        why=f"unpaired: accuracy {ours:.4f} vs {theirs:.4f} + min_gain {policy.min_gain:g}",
    )
