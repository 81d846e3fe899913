"""PatchNet: a timm backbone, an L2-normalised embedding and a cosine classifier over patch types."""

from dataclasses import dataclass
from itertools import combinations

import timm
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_patchnet import PatchNetConfig


@dataclass
class PatchNetImageClassifierOutput(ModelOutput):
    r"""
    Output of [`PatchNetForImageClassification`]. `B` images, `N` patches (or views) per image, `K` classes,
    `D` embedding size; for a 4-D input `N` is absent from the shapes.

    loss (`torch.FloatTensor` of shape `()`, returned when `labels` are given):
        `classification_weight * mean over views of the asymmetric margin loss + similarity_weight *
        similarity loss between the views`.
    logits (`torch.FloatTensor` of shape `(B, K)`):
        4-D input: `scale * cos`. 5-D input: the log of the per-image class probabilities (the mean over
        patches of the patch softmax), so that `softmax(logits)` gives those probabilities.
    liveness_score (`torch.FloatTensor` of shape `(B,)`):
        Per-image liveness in [0, 1], higher = bona fide, aggregated as `config.score_aggregation` says.
    embeddings (`torch.FloatTensor` of shape `(B, [N,] D)`):
        L2-normalised embeddings.
    patch_logits (`torch.FloatTensor` of shape `(B, [N,] K)`):
        `scale * cos` of every patch (margin-free).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    liveness_score: torch.FloatTensor | None = None
    embeddings: torch.FloatTensor | None = None
    patch_logits: torch.FloatTensor | None = None


class PatchNetCosineClassifier(nn.Module):
    """Cosine classifier: `cos_j = (w_j / ||w_j||) . x_hat`, the weights normalised in every forward."""

    def __init__(self, embedding_dim: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """`(..., D)` normalised embeddings -> cosines `(..., K)` in [-1, 1]."""
        return (embeddings @ F.normalize(self.weight, dim=-1).T).clamp(-1.0, 1.0)


def asymmetric_margin_loss(
    cosine: torch.Tensor, labels: torch.Tensor, live_mask: torch.Tensor, scale: float, margin_live: float,
    margin_spoof: float,
) -> torch.Tensor:
    """AM-softmax with a larger margin for live targets (METHOD.md, "Losses").

    Args:
        cosine: `(M, K)` cosines. labels: `(M,)` class ids. live_mask: `(K,)` bool, True for live classes.
    Returns: the mean over the `M` samples of
        `-log(e^{s(cos_y - m_y)} / (e^{s(cos_y - m_y)} + sum_{j != y} e^{s cos_j}))`.
    """
    margins = torch.where(live_mask[labels], margin_live, margin_spoof).to(cosine.dtype)
    target = F.one_hot(labels, cosine.shape[-1]).to(cosine.dtype)
    return F.cross_entropy(scale * (cosine - target * margins[:, None]), labels)


def similarity_loss(embeddings: torch.Tensor) -> torch.Tensor:
    """`(B, N, D)` normalised embeddings of `N >= 2` views -> mean over view pairs of
    `mean_i ||x_a,i - x_b,i||^2` (= 2 - 2 cos); 0 when the views are identical."""
    pair_losses = [
        (embeddings[:, a] - embeddings[:, b]).pow(2).sum(-1).mean()
        for a, b in combinations(range(embeddings.shape[1]), 2)
    ]
    return torch.stack(pair_losses).mean()


class PatchNetPreTrainedModel(PreTrainedModel):
    config: PatchNetConfig
    config_class = PatchNetConfig
    base_model_prefix = "patchnet"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise the head only: the backbone keeps timm's own initialisation (or loaded weights)."""
        std = self.config.initializer_range
        if isinstance(module, PatchNetCosineClassifier):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.Linear) and module is getattr(self, "projection", None):
            init.normal_(module.weight, mean=0.0, std=std)
            init.zeros_(module.bias)


class PatchNetForImageClassification(PatchNetPreTrainedModel):
    """PatchNet for (multi-patch) face anti-spoofing.

    backbone (timm, global pooled features) -> optional linear projection -> L2 normalisation -> cosine
    classifier. Accepts one patch per image `(B, 3, P, P)` or several patches / views per image
    `(B, N, 3, P, P)`, which are scored together: per-image probabilities are the mean patch softmax.
    """

    def __init__(self, config: PatchNetConfig) -> None:
        super().__init__(config)
        self.backbone = timm.create_model(
            config.backbone, pretrained=False, num_classes=0, **(config.backbone_kwargs or {})
        )
        # Models with a pre-logits head (MobileNetV3, GhostNet) pool to head_hidden_size, not num_features.
        features = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        self.projection = nn.Linear(features, config.embedding_dim) if config.embedding_dim else nn.Identity()
        self.classifier = PatchNetCosineClassifier(config.embedding_dim or features, config.num_labels)
        self.post_init()

    @property
    def live_mask(self) -> torch.Tensor:
        """`(K,)` bool, True for the bona fide classes. Derived from the config rather than stored as a buffer,
        which `from_pretrained` would leave uninitialised."""
        mask = torch.zeros(self.config.num_labels, dtype=torch.bool, device=self.classifier.weight.device)
        mask[self.config.live_label_ids] = True
        return mask

    def load_pretrained_backbone(self, weights_file: str | None = None) -> None:
        """Load ImageNet weights into the backbone: timm's default tag from the Hub, or a local file
        (`.safetensors` / `.pth`) when offline. Only on explicit request; `from_pretrained` never calls it."""
        overlay = {"file": str(weights_file)} if weights_file else None
        pretrained = timm.create_model(
            self.config.backbone, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay,
            **(self.config.backbone_kwargs or {}),
        )
        self.backbone.load_state_dict(pretrained.state_dict())

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(M, 3, P, P)` patches -> L2-normalised embeddings `(M, D)`."""
        return F.normalize(self.projection(self.backbone(pixel_values)), dim=-1)

    def _liveness(self, cosine: torch.Tensor, probabilities: torch.Tensor, live_mask: torch.Tensor) -> torch.Tensor:
        """`(B, N, K)` cosines and patch probabilities -> per-image liveness `(B,)`."""
        if self.config.score_aggregation == "cosine_margin":
            margin = cosine[..., live_mask].amax(-1) - cosine[..., ~live_mask].amax(-1)
            return ((margin + 2.0) / 4.0).mean(-1)
        return probabilities[..., live_mask].sum(-1).mean(-1)

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> PatchNetImageClassifierOutput | tuple:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(B, 3, P, P)` or `(B, N, 3, P, P)`):
            Normalised patches; with 5 dimensions, `N` patches (evaluation) or views (training) per image.
        labels (`torch.LongTensor` of shape `(B,)`, *optional*):
            Class ids (fine-grained patch types) of the images; every view of an image shares its label.
        """
        single_patch = pixel_values.dim() == 4
        if single_patch:
            pixel_values = pixel_values.unsqueeze(1)
        batch, views = pixel_values.shape[:2]
        embeddings = self.embed(pixel_values.flatten(0, 1)).view(batch, views, -1)
        cosine = self.classifier(embeddings)
        patch_logits = self.config.scale * cosine
        patch_probabilities = patch_logits.float().softmax(-1)
        liveness_score = self._liveness(cosine.float(), patch_probabilities, self.live_mask)

        loss = None
        if labels is not None:
            loss = self._loss(cosine, embeddings, labels)

        if single_patch:
            logits, embeddings, patch_logits = patch_logits[:, 0], embeddings[:, 0], patch_logits[:, 0]
        else:
            probabilities = patch_probabilities.mean(1)
            logits = probabilities.clamp_min(torch.finfo(probabilities.dtype).tiny).log()
        output = PatchNetImageClassifierOutput(
            loss=loss, logits=logits, liveness_score=liveness_score, embeddings=embeddings,
            patch_logits=patch_logits,
        )
        return output if return_dict is not False else output.to_tuple()

    def _loss(self, cosine: torch.Tensor, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """`L = w_cls * mean over views of L_amc + w_sim * L_sim` (METHOD.md): averaging over the views keeps
        the classification term on the same scale for one view, two views or a full patch grid."""
        views = cosine.shape[1]
        classification = asymmetric_margin_loss(
            cosine.flatten(0, 1).float(), labels.repeat_interleave(views), self.live_mask,
            self.config.scale, self.config.margin_live, self.config.margin_spoof,
        )
        loss = self.config.classification_weight * classification
        if views > 1 and self.config.similarity_weight > 0:
            loss = loss + self.config.similarity_weight * similarity_loss(embeddings.float())
        return loss


__all__ = [
    "PatchNetForImageClassification",
    "PatchNetImageClassifierOutput",
    "PatchNetPreTrainedModel",
    "asymmetric_margin_loss",
    "similarity_loss",
]
