"""The one place that reads and writes weights: the kit's checkpoint format and foreign import.

* **Kit checkpoints** (:mod:`~radjepa_lab.checkpoints.kit`, ``checkpoint.pt``): a plain dict
  with ``format="radjepa_lab"``, the run's config, its networks, the optimiser, every RNG
  state and the data-stream position, so ``resume=True`` continues an interrupted run
  bit-exactly. The objective (I-JEPA, DINO or MAE) decides which networks it holds
  (:data:`NETWORKS`) and which one is evaluated (:data:`EVALUATED`). :func:`save_checkpoint`
  writes atomically; :func:`load_checkpoint` is the only reader of the format;
  :func:`load_jepa` (I-JEPA) and :func:`load_trained` (any objective) build the networks;
  :func:`export_checkpoint` writes the small inference-only copy the kit ships.
* **Foreign checkpoints** (:mod:`~radjepa_lab.checkpoints.foreign`): :func:`load_encoder`
  imports encoders of the official I-JEPA code, RadJEPA releases, Rad-DINO / DINOv2
  (original or Hugging Face key names) and Hugging Face ``IJepaModel`` files.

Every file is read with ``torch.load(weights_only=True)`` (or safetensors): loading never runs
pickled code.
"""

from radjepa_lab.checkpoints.foreign import (
    FORMATS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    detect_format,
    hf_side_files,
    load_encoder,
)
from radjepa_lab.checkpoints.kit import (
    CKPT_FORMAT,
    CKPT_NAME,
    CKPT_VERSION,
    EVALUATED,
    EXPORTED,
    LOG_SUFFIX,
    NETWORKS,
    REPO_ROOT,
    SHIPPED_CHECKPOINT,
    SHIPPED_CHECKPOINTS,
    SHIPPED_JEPA_SAME_BUDGET,
    JEPAModels,
    TrainedModels,
    as_jepa,
    checkpoint_config,
    export_checkpoint,
    load_checkpoint,
    load_jepa,
    load_trained,
    load_weights,
    require_entries,
    rng_state,
    save_checkpoint,
    set_rng_state,
    shipped_checkpoints,
    training_log,
)

__all__ = [
    "CKPT_FORMAT",
    "CKPT_NAME",
    "CKPT_VERSION",
    "EVALUATED",
    "EXPORTED",
    "FORMATS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LOG_SUFFIX",
    "NETWORKS",
    "REPO_ROOT",
    "SHIPPED_CHECKPOINT",
    "SHIPPED_CHECKPOINTS",
    "SHIPPED_JEPA_SAME_BUDGET",
    "JEPAModels",
    "TrainedModels",
    "as_jepa",
    "checkpoint_config",
    "detect_format",
    "export_checkpoint",
    "hf_side_files",
    "load_checkpoint",
    "load_encoder",
    "load_jepa",
    "load_trained",
    "load_weights",
    "require_entries",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "shipped_checkpoints",
    "training_log",
]
