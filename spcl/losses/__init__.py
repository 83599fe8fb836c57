"""Losses: segmentation CE (with temperature), prototype contrastive loss, adversarial BCE."""
from .adversarial import SOURCE_DOMAIN, TARGET_DOMAIN, domain_bce
from .contrastive import PrototypeContrastiveLoss, prototype_logits
from .segmentation import segmentation_ce, upsample_like

__all__ = ["PrototypeContrastiveLoss", "prototype_logits", "segmentation_ce", "upsample_like", "domain_bce",
           "SOURCE_DOMAIN", "TARGET_DOMAIN"]
