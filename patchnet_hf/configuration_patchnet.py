"""PatchNet model configuration."""

from typing import Any, Literal

import timm
from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

DEFAULT_ID2LABEL = {0: "spoof", 1: "live"}
SCORE_AGGREGATIONS = ("probability", "cosine_margin")


@strict(accept_kwargs=True)
class PatchNetConfig(PreTrainedConfig):
    r"""
    Configuration of a [`PatchNetForImageClassification`]: a timm backbone, an optional projection, an
    L2-normalised embedding and a cosine classifier over fine-grained patch types (see METHOD.md).

    Args:
        backbone (`str`, defaults to `"resnet18"`):
            Any timm model name, used as a feature extractor (global pooled features).
        backbone_kwargs (`dict`, *optional*):
            Extra keyword arguments for `timm.create_model` (e.g. `{"drop_path_rate": 0.1}`).
        embedding_dim (`int`, *optional*):
            Size of the linear projection after the backbone; `None` uses the backbone features directly.
        id2label (`dict[int, str]`, defaults to `{0: "spoof", 1: "live"}`):
            The fine-grained patch types. `label2id` follows from it.
        live_labels (`list[str]`, defaults to `["live"]`):
            The classes that are bona fide; every other class is an attack.
        scale (`float`, defaults to 30):
            The scale `s` of the cosine logits `s * cos`.
        margin_live (`float`, defaults to 0.4) / margin_spoof (`float`, defaults to 0.1):
            Additive cosine margins of the asymmetric margin loss for live and spoof targets, in [0, 1).
        classification_weight (`float`, defaults to 1) / similarity_weight (`float`, defaults to 1):
            Weights of the margin loss and of the two-view similarity loss.
        patch_size (`int`, defaults to 160):
            Side of the square patches cropped at native resolution.
        grid_size (`int`, defaults to 3):
            Evaluation patches lie on a `grid_size x grid_size` grid spanning the image.
        threshold (`float`, defaults to 0.5):
            Decision threshold on the liveness score (bona fide iff `score >= threshold`); training stores
            the threshold calibrated on its validation set here.
        threshold_strategy (`str`, defaults to `"fixed"`):
            How `threshold` was chosen (e.g. `"fixed"`, `"eer"`), for reports.
        score_aggregation (`str`, defaults to `"probability"`):
            `"probability"`: liveness = mean over patches of the summed live-class softmax.
            `"cosine_margin"`: mean over patches of `(max live cos - max spoof cos + 2) / 4`.
        initializer_range (`float`, defaults to 0.01):
            Standard deviation of the head's initialisation (the backbone keeps timm's own).
    """

    model_type = "patchnet"

    backbone: str = "resnet18"
    backbone_kwargs: dict[str, Any] | None = None
    embedding_dim: int | None = None
    live_labels: list[str] | None = None
    scale: float | int = 30.0
    margin_live: float | int = 0.4
    margin_spoof: float | int = 0.1
    classification_weight: float | int = 1.0
    similarity_weight: float | int = 1.0
    patch_size: int = 160
    grid_size: int = 3
    threshold: float | int = 0.5
    threshold_strategy: str = "fixed"
    score_aggregation: Literal["probability", "cosine_margin"] = "probability"
    initializer_range: float = 0.01

    def __post_init__(self, **kwargs):
        if self.id2label is None and kwargs.get("num_labels") is None:
            self.id2label = dict(DEFAULT_ID2LABEL)
        if self.live_labels is None:
            self.live_labels = ["live"]
        super().__post_init__(**kwargs)
        self.label2id = {name: index for index, name in self.id2label.items()}
        self._check_values()

    def _check_values(self) -> None:
        # Checked here rather than in `validate_*` methods, whose errors `@strict` re-wraps as non-ValueErrors.
        if not timm.is_model(self.backbone):
            raise ValueError(f"backbone={self.backbone!r} is not a timm model name (see `timm.list_models()`).")
        for name in ("margin_live", "margin_spoof"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"{name}={value} must lie in [0, 1).")
        if self.scale <= 0:
            raise ValueError(f"scale={self.scale} must be positive.")
        if self.classification_weight < 0 or self.similarity_weight < 0:
            raise ValueError("classification_weight and similarity_weight must be non-negative.")
        if self.embedding_dim is not None and self.embedding_dim <= 0:
            raise ValueError(f"embedding_dim={self.embedding_dim} must be positive (or None for no projection).")
        if self.patch_size <= 0 or self.grid_size <= 0:
            raise ValueError(f"patch_size={self.patch_size} and grid_size={self.grid_size} must be positive.")
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold={self.threshold} must lie in [0, 1].")
        labels = list(self.id2label.values())
        if len(set(labels)) != len(labels):
            raise ValueError(f"id2label has duplicated class names: {labels}.")
        unknown = [name for name in self.live_labels if name not in self.label2id]
        if unknown or not self.live_labels:
            raise ValueError(f"live_labels={self.live_labels} must name classes among {labels}; unknown: {unknown}.")
        if len(self.live_labels) == len(labels):
            raise ValueError(f"live_labels={self.live_labels} leaves no spoof class among {labels}.")

    @property
    def live_label_ids(self) -> list[int]:
        """Ids of the bona fide classes, ascending."""
        return sorted(self.label2id[name] for name in self.live_labels)


__all__ = ["PatchNetConfig"]
