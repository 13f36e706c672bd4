"""What each named config choice may be: the registries' names in a leaf module that imports neither torch nor
Lightning, so that a typo is refused and a plan is priced before they load (about 7 s here).

The modules that implement each choice import their names from here; tests/test_config.py checks that every
registry (encoders, models, heads, rules, scores) implements exactly these names."""

from __future__ import annotations

#: encoders of elfs/method/backbones.py (BACKBONES)
BACKBONE_NAMES = ("efficientnet_lite0", "dino_vits16", "dino_vitb16", "swav_resnet50", "clip_vitb16", "timm")
#: pseudo-labels: TEMI heads (elfs/cluster) or k-means on the embeddings
CLUSTER_METHODS = ("temi", "kmeans")
#: how TEMI's heads become one pseudo-label per image (elfs/cluster/pseudo_labels.py)
PSEUDO_LABEL_RULES = ("best_head", "ensemble", "aligned_mean")
#: TEMI's H heads as a Python loop (fastest on a CPU) or one batched matmul (a GPU)
HEAD_IMPLS = ("loop", "batched")
#: training-dynamics scores and which end of each is hard (elfs/training/recorder.py)
HARD_END: dict[str, str] = {
    "aum": "low",
    "aum_prob_sum": "low",
    "forgetting": "high",
    "el2n": "high",
    "correctness": "low",
}
#: what each classifier of elfs/models consumes: "images" ([B, C, H, W] float) or "embeddings" ([B, D] float)
MODEL_INPUTS: dict[str, str] = {
    "small_cnn": "images",
    "mlp": "embeddings",
    "resnet18_cifar": "images",
    "resnet34": "images",
}


def uses_embeddings(model: str) -> bool:
    """Whether a classifier of this kind trains on the embeddings (an MLP) rather than on the images."""
    return MODEL_INPUTS[model] == "embeddings"
