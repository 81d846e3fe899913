"""patchnet-hf: PatchNet face anti-spoofing as a Hugging Face model.

Importing the package registers PatchNet with the Auto classes, and marks its classes for
`trust_remote_code` export: `save_pretrained` then also writes the model code and `auto_map`.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification

from .configuration_patchnet import PatchNetConfig
from .image_processing_patchnet import PatchNetImageProcessor
from .modeling_patchnet import PatchNetForImageClassification, PatchNetImageClassifierOutput

__version__ = "0.1.0"

AutoConfig.register(PatchNetConfig.model_type, PatchNetConfig, exist_ok=True)
AutoModelForImageClassification.register(PatchNetConfig, PatchNetForImageClassification, exist_ok=True)
# One processor for both backend names: it works on PIL images and returns torch tensors either way.
AutoImageProcessor.register(
    PatchNetConfig,
    image_processor_classes={"torchvision": PatchNetImageProcessor, "pil": PatchNetImageProcessor},
    exist_ok=True,
)
PatchNetConfig.register_for_auto_class()
PatchNetForImageClassification.register_for_auto_class("AutoModelForImageClassification")
PatchNetImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = [
    "PatchNetConfig",
    "PatchNetForImageClassification",
    "PatchNetImageClassifierOutput",
    "PatchNetImageProcessor",
]
