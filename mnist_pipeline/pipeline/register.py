"""Register stage: store what one run produced as the next version of the model (torch-free).

The candidate is the run's layout (weights, their training record, ONNX, reports, plots); the
registry re-reads the recorded gate and parity verdicts (gate.py) and checks that every report
was made from these very files before committing, and decides the alias by the promotion
policy (`registry.promotion_margin`). The card records the effective params (`model` and
`train` as the weights were trained, from the training record; the rest as configured now) and
the inputs fingerprint (fingerprint.py), which is why this stage, unlike the others, takes all
of them.
"""

from __future__ import annotations

from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import Params
from mnist_pipeline.registry import Registration, Registry, candidate_from_layout


def register(params: Params, layout: Layout, skip_same_inputs: bool = False) -> Registration:
    """Stage entry: register layout's outputs, with their inputs fingerprint, as a version
    (not when a version already holds the same files, or, with `skip_same_inputs`, inputs)."""
    registry = Registry.from_params(params.registry, layout)
    candidate = candidate_from_layout(layout)  # a missing output names the stage to run
    return registry.register(
        candidate, params, params.registry.promotion_margin, skip_same_inputs=skip_same_inputs
    )
