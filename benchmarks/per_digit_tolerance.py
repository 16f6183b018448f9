"""How often does registry.promotion.per_digit_tolerance veto by chance, and what does it catch?

Exact sums, no training. Two models that are equally good disagree on D images of one digit
(D ~ Poisson(`--discordant`), the images split between them by a fair coin); the check vetoes
when the challenger's net loss on that digit, over the digit's test images (`--images`: MNIST's
own counts per digit, 892 fives to 1,135 ones, by default), exceeds the tolerance, as
evaluation/paired.py divides by the real count. Printed per tolerance: the chance that at least
one of the ten digits vetoes two equally good models, and the chance of catching a challenger
that really loses `--lost` more images on one digit (a 1-point drop on ~1,000 images is 10;
the range over the ten digits, since fewer images make the same loss a larger share).

    python -m benchmarks.per_digit_tolerance
"""

from __future__ import annotations

import argparse
import math

# How many of each digit 0-9 MNIST's 10,000 test images hold.
MNIST_TEST_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)


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
    parser.add_argument(
        "--images",
        default=",".join(map(str, MNIST_TEST_COUNTS)),
        help="test images per digit: ten counts, comma-separated, or one for every digit",
    )
    parser.add_argument("--lost", type=int, default=10, help="images a regressed digit loses")
    parser.add_argument("--tolerances", default="0.003,0.005,0.01,0.02")
    parser.add_argument("--discordant", default="2,5,10,20", help="mean disagreements per digit")
    args = parser.parse_args()
    counts = [int(n) for n in args.images.split(",")]
    if len(counts) == 1:
        counts *= 10
    if len(counts) != 10 or min(counts) < 1:
        parser.error(f"--images: give ten positive counts or one, not {args.images!r}")
    header = f"{'disagree/digit':>14} {'tolerance':>9} {'chance veto (10 digits)':>24}"
    print(f"{header} {'caught (by digit)':>18}")
    for mean in (float(m) for m in args.discordant.split(",")):
        for tolerance in (float(t) for t in args.tolerances.split(",")):
            kept = math.prod(1 - veto_chance(mean, n, tolerance) for n in counts)
            caught = [veto_chance(mean, n, tolerance, args.lost) for n in counts]
            span = f"{min(caught):.3f}-{max(caught):.3f}"
            print(f"{mean:>14g} {tolerance:>9g} {1 - kept:>24.3f} {span:>18}")


if __name__ == "__main__":
    main()
