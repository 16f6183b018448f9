"""How often does registry.promotion.per_digit_tolerance veto by chance, and what does it catch?

Exact sums, no training. Two models that are equally good disagree on D images of one digit
(D ~ Poisson(`--discordant`), the images split between them by a fair coin); the check vetoes
when the challenger's net loss on that digit, over the digit's `--images`, exceeds the
tolerance. Printed per tolerance: the chance that at least one of ten digits vetoes two equally
good models, and the chance of catching a challenger that really loses `--lost` more images on
one digit (a 1-point drop on ~1,000 images is 10).

    python -m benchmarks.per_digit_tolerance
"""

from __future__ import annotations

import argparse
import math


def poisson(mean: float, k: int) -> float:
    return math.exp(-mean + k * math.log(mean) - math.lgamma(k + 1)) if mean > 0 else float(k == 0)


def veto_chance(mean: float, images: int, tolerance: float, lost: int = 0) -> float:
    """P(net loss on one digit > tolerance * images) for D ~ Poisson(mean) coin-split
    disagreements plus `lost` images only the challenger gets wrong."""
    total = 0.0
    for d in range(int(mean * 4 + 40)):
        weight = poisson(mean, d)
        for n10 in range(d + 1):  # images only the challenger gets right
            n01 = d - n10 + lost
            if (n01 - n10) / images > tolerance:
                total += weight * math.comb(d, n10) / 2**d
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="test images per digit")
    parser.add_argument("--lost", type=int, default=10, help="images a regressed digit loses")
    parser.add_argument("--tolerances", default="0.003,0.005,0.01,0.02")
    parser.add_argument("--discordant", default="2,5,10,20", help="mean disagreements per digit")
    args = parser.parse_args()
    print(f"{'disagree/digit':>14} {'tolerance':>9} {'chance veto (10 digits)':>24} {'caught':>7}")
    for mean in (float(m) for m in args.discordant.split(",")):
        for tolerance in (float(t) for t in args.tolerances.split(",")):
            one = veto_chance(mean, args.images, tolerance)
            caught = veto_chance(mean, args.images, tolerance, args.lost)
            print(f"{mean:>14g} {tolerance:>9g} {1 - (1 - one) ** 10:>24.3f} {caught:>7.3f}")


if __name__ == "__main__":
    main()
