"""PatchNet network, losses and scores against METHOD.md."""

import math

import numpy as np
import pytest
import timm
import torch
from conftest import TINY_BACKBONE, TINY_PATCH, tiny_config
from safetensors.torch import save_file

from patchnet_hf import PatchNetConfig, PatchNetForImageClassification
from patchnet_hf.modeling_patchnet import asymmetric_margin_loss, similarity_loss


def patches(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, 3, TINY_PATCH, TINY_PATCH, generator=torch.Generator().manual_seed(seed))


def reference_margin_loss(cosine, labels, live_classes, scale, margin_live, margin_spoof) -> float:
    """The METHOD.md formula, written out sample by sample."""
    losses = []
    for cos_row, y in zip(cosine.tolist(), labels.tolist(), strict=True):
        margin = margin_live if y in live_classes else margin_spoof
        target = math.exp(scale * (cos_row[y] - margin))
        others = sum(math.exp(scale * c) for j, c in enumerate(cos_row) if j != y)
        losses.append(-math.log(target / (target + others)))
    return sum(losses) / len(losses)


def test_logits_are_scaled_cosines(tiny_model):
    with torch.no_grad():
        output = tiny_model(patches(6))
    cosine = output.logits / tiny_model.config.scale
    assert output.logits.shape == (6, 2)
    assert cosine.abs().max() <= 1.0 + 1e-6
    expected = torch.nn.functional.normalize(tiny_model.classifier.weight, dim=-1) @ output.embeddings.T
    torch.testing.assert_close(cosine, expected.T)
    torch.testing.assert_close(output.embeddings.norm(dim=-1), torch.ones(6))


def test_rescaling_classifier_weights_leaves_logits_unchanged(tiny_model):
    pixel_values = patches(4)
    with torch.no_grad():
        before = tiny_model(pixel_values).logits
        tiny_model.classifier.weight.mul_(37.5)
        after = tiny_model(pixel_values).logits
    torch.testing.assert_close(before, after)


def test_classifier_weights_receive_gradients(tiny_model):
    tiny_model.train()
    output = tiny_model(patches(4, 2), labels=torch.tensor([0, 1, 1, 0]))
    output.loss.backward()
    assert tiny_model.classifier.weight.grad is not None
    assert tiny_model.classifier.weight.grad.abs().sum() > 0
    assert tiny_model.backbone.conv1[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("num_classes,live_classes", [(2, {1}), (4, {0}), (5, {1, 3})])
def test_margin_loss_matches_formula(num_classes, live_classes):
    generator = torch.Generator().manual_seed(num_classes)
    cosine = torch.rand(12, num_classes, generator=generator) * 2 - 1
    labels = torch.arange(12) % num_classes
    live_mask = torch.tensor([k in live_classes for k in range(num_classes)])
    loss = asymmetric_margin_loss(cosine, labels, live_mask, 30.0, 0.4, 0.1)
    expected = reference_margin_loss(cosine, labels, live_classes, 30.0, 0.4, 0.1)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_live_margin_is_the_larger_one():
    # The same cosines with the target on a live class or on a spoof class: the live target pays more.
    cosine = torch.tensor([[0.3, 0.5]])
    live_target = asymmetric_margin_loss(cosine.flip(-1), torch.tensor([1]), torch.tensor([False, True]), 30, 0.4, 0.1)
    spoof_target = asymmetric_margin_loss(cosine, torch.tensor([1]), torch.tensor([True, False]), 30, 0.4, 0.1)
    assert live_target > spoof_target
    config = PatchNetConfig(backbone=TINY_BACKBONE)
    assert config.margin_live == 0.4 and config.margin_spoof == 0.1 and config.scale == 30


def test_similarity_loss_zero_for_identical_views_positive_otherwise():
    views = torch.nn.functional.normalize(torch.randn(5, 1, 8), dim=-1)
    assert similarity_loss(views.expand(5, 2, 8)).item() == 0.0
    different = torch.nn.functional.normalize(torch.randn(5, 2, 8), dim=-1)
    expected = ((different[:, 0] - different[:, 1]) ** 2).sum(-1).mean()
    torch.testing.assert_close(similarity_loss(different), expected)
    torch.testing.assert_close(expected, (2 - 2 * (different[:, 0] * different[:, 1]).sum(-1)).mean())
    assert expected > 0


def test_two_view_loss_combines_both_views_and_similarity(tiny_model):
    tiny_model.config.similarity_weight = 0.7
    tiny_model.config.classification_weight = 1.3
    views = patches(3, 2)
    labels = torch.tensor([1, 0, 1])
    with torch.no_grad():
        total = tiny_model(views, labels=labels).loss
        first, second = (tiny_model(views[:, v]) for v in range(2))
        amc = [
            asymmetric_margin_loss(out.logits / 30, labels, tiny_model.live_mask, 30, 0.4, 0.1)
            for out in (first, second)
        ]
        sim = ((first.embeddings - second.embeddings) ** 2).sum(-1).mean()
        identical = tiny_model(views[:, :1].expand(3, 2, 3, TINY_PATCH, TINY_PATCH), labels=labels).loss
    torch.testing.assert_close(total, 1.3 * (amc[0] + amc[1]) / 2 + 0.7 * sim)
    torch.testing.assert_close(identical, 1.3 * amc[0])


def test_multi_patch_input_averages_live_probability(tiny_model):
    grid = patches(2, 5)
    with torch.no_grad():
        output = tiny_model(grid)
        per_patch = torch.stack([tiny_model(grid[:, n]).logits.softmax(-1) for n in range(5)], dim=1)
    torch.testing.assert_close(output.liveness_score, per_patch[..., 1].mean(1))
    torch.testing.assert_close(output.logits.softmax(-1), per_patch.mean(1))
    assert output.patch_logits.shape == (2, 5, 2)


def test_fine_grained_liveness_sums_live_classes():
    torch.manual_seed(1)
    config = tiny_config(id2label={0: "print", 1: "live_indoor", 2: "replay", 3: "live_outdoor"},
                         live_labels=["live_indoor", "live_outdoor"])
    model = PatchNetForImageClassification(config).eval()
    with torch.no_grad():
        output = model(patches(3))
    probabilities = output.logits.softmax(-1)
    torch.testing.assert_close(output.liveness_score, probabilities[:, 1] + probabilities[:, 3])


def test_cosine_margin_aggregation():
    torch.manual_seed(2)
    model = PatchNetForImageClassification(tiny_config(score_aggregation="cosine_margin")).eval()
    with torch.no_grad():
        output = model(patches(2, 3))
    cosine = output.patch_logits / 30
    expected = ((cosine[..., 1] - cosine[..., 0] + 2) / 4).mean(1)
    torch.testing.assert_close(output.liveness_score, expected)


def test_fresh_model_keeps_timm_initialisation():
    torch.manual_seed(3)
    model = PatchNetForImageClassification(tiny_config())
    torch.manual_seed(3)
    reference = timm.create_model(TINY_BACKBONE, num_classes=0)
    for (name, ours), theirs in zip(model.backbone.state_dict().items(), reference.state_dict().values(), strict=True):
        torch.testing.assert_close(ours, theirs, msg=f"backbone tensor {name} was re-initialised")
    # timm zero-initialises the last BatchNorm of each residual block; a generic re-init would set ones.
    assert model.backbone.layer1[0].bn2.weight.abs().sum() == 0
    assert model.classifier.weight.std().item() == pytest.approx(0.01, rel=0.3)


def test_pretrained_backbone_from_local_file(tmp_path):
    torch.manual_seed(4)
    source = timm.create_model(TINY_BACKBONE, num_classes=0)
    weights = tmp_path / "backbone.safetensors"
    save_file(source.state_dict(), str(weights))
    model = PatchNetForImageClassification(tiny_config())
    model.load_pretrained_backbone(weights)
    for name, tensor in source.state_dict().items():
        torch.testing.assert_close(model.backbone.state_dict()[name], tensor)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(backbone="no_such_net"), "not a timm model"),
        (dict(margin_live=1.0), r"margin_live=1.0 must lie in \[0, 1\)"),
        (dict(margin_spoof=-0.1), r"margin_spoof=-0.1 must lie in \[0, 1\)"),
        (dict(live_labels=["bona_fide"]), "unknown: \\['bona_fide'\\]"),
        (dict(id2label={0: "live", 1: "live_2"}, live_labels=["live", "live_2"]), "no spoof class"),
        (dict(threshold=1.5), "threshold=1.5"),
        (dict(scale=0), "scale=0 must be positive"),
    ],
)
def test_invalid_config_values_raise(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_default_labels_match_csv_convention():
    config = PatchNetConfig(backbone=TINY_BACKBONE)
    assert config.id2label == {0: "spoof", 1: "live"}
    assert config.live_label_ids == [1]
    assert np.array_equal(PatchNetForImageClassification(config).live_mask.numpy(), [False, True])


def test_backbone_with_pre_logits_head_sizes_the_classifier():
    # MobileNetV3 pools to head_hidden_size (1024), not num_features (288): the head must follow the pooled size.
    config = PatchNetConfig(backbone="mobilenetv3_small_050", patch_size=TINY_PATCH)
    model = PatchNetForImageClassification(config).eval()
    with torch.no_grad():
        output = model(patches(2))
    assert model.classifier.weight.shape == (2, model.backbone.head_hidden_size)
    assert output.embeddings.shape == (2, model.backbone.head_hidden_size)
