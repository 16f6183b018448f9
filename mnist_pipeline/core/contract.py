"""The ONNX model's interface and MNIST's conventions, in one torch-free place.

Export writes the graph to this contract, predict and the examples consume it, and the data and
metrics code share its constants. Nothing here imports torch (predict must stay torch-free).
"""

from __future__ import annotations

import json

IMAGE_SIZE = 28  # pixels per side of an MNIST digit
NUM_CLASSES = 10
CLASS_LABELS = tuple(str(d) for d in range(NUM_CLASSES))
MNIST_TRAIN_IMAGES = 60_000  # the training split; the validation split is cut from it

# Training-set pixel statistics (after scaling to [0, 1]); the exported graph applies them itself.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

INPUT_NAME = "image"
LOGITS = "logits"
PROBABILITIES = "probabilities"
OUTPUT_NAMES = (LOGITS, PROBABILITIES)

INPUT_DESCRIPTION = (
    f"{INPUT_NAME}: float32 [N, 1, {IMAGE_SIZE}, {IMAGE_SIZE}], pixel values in [0, 1], white "
    "digit on black background (MNIST convention), digit centred by centre of mass in a 20x20 "
    "box; normalisation is applied inside the graph"
)
OUTPUT_DESCRIPTION = (
    f"{LOGITS}: float32 [N, {NUM_CLASSES}]; {PROBABILITIES}: float32 [N, {NUM_CLASSES}] "
    f"(softmax of {LOGITS})"
)
PREPROCESSING_DESCRIPTION = "for real images see mnist_pipeline/data/preprocess.py (numbered steps)"


def normalisation_json() -> str:
    """The normalisation the graph applies, as the JSON string stored in the ONNX metadata."""
    return json.dumps(
        {
            "mean": MNIST_MEAN,
            "std": MNIST_STD,
            "formula": "(image - mean) / std",
            "inside_graph": True,
        }
    )
