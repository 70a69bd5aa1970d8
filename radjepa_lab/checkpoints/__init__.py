"""The one place that reads and writes weights: the kit's checkpoint format and foreign import.

* **Kit checkpoints** (:mod:`~radjepa_lab.checkpoints.kit`, ``checkpoint.pt``): a plain dict
  with ``format="radjepa_lab"``, the run's config, its networks, the optimiser, every RNG
  state and the data-stream position, so ``resume=True`` continues an interrupted run
  bit-exactly. :func:`save_checkpoint` writes atomically; :func:`load_checkpoint` is the only
  reader of the format; :func:`load_jepa` builds the networks; :func:`export_checkpoint` writes
  the small inference-only copy the kit ships.
* **Foreign checkpoints** (:mod:`~radjepa_lab.checkpoints.foreign`): :func:`load_encoder`
  imports encoders of the official I-JEPA code, RadJEPA releases and Rad-DINO / DINOv2
  (original or Hugging Face key names).

Every file is read with ``torch.load(weights_only=True)`` (or safetensors): loading never runs
pickled code.
"""

from radjepa_lab.checkpoints.foreign import (
    FORMATS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    detect_format,
    load_encoder,
)
from radjepa_lab.checkpoints.kit import (
    CKPT_FORMAT,
    CKPT_NAME,
    CKPT_VERSION,
    REPO_ROOT,
    SHIPPED_CHECKPOINT,
    JEPAModels,
    checkpoint_config,
    export_checkpoint,
    load_checkpoint,
    load_jepa,
    load_weights,
    require_entries,
    rng_state,
    save_checkpoint,
    set_rng_state,
)

__all__ = [
    "CKPT_FORMAT",
    "CKPT_NAME",
    "CKPT_VERSION",
    "FORMATS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "REPO_ROOT",
    "SHIPPED_CHECKPOINT",
    "JEPAModels",
    "checkpoint_config",
    "detect_format",
    "export_checkpoint",
    "load_checkpoint",
    "load_encoder",
    "load_jepa",
    "load_weights",
    "require_entries",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]
