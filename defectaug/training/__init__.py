"""Training learned defect generators: real defect crops, the shared loop, architecture trainers."""

from defectaug.training.augment import diff_augment
from defectaug.training.checkpoint import (
    CheckpointError,
    convert_legacy_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from defectaug.training.data import DefectCropSet, crops_from_regions, load_defect_crops
from defectaug.training.dfmgan import DFMGANTrainer  # importing it registers "dfmgan"
from defectaug.training.memory import MemoryEstimate, TrainingResourceError
from defectaug.training.trainer import (
    CHECKPOINT_NAME,
    CHECKPOINT_TENSORS,
    TRAINERS,
    DCDGANTrainer,
    GeneratorTrainer,
    TrainConfig,
    check_device,
    layer_grid,
)

__all__ = [
    "CHECKPOINT_NAME",
    "CHECKPOINT_TENSORS",
    "TRAINERS",
    "CheckpointError",
    "DCDGANTrainer",
    "DFMGANTrainer",
    "DefectCropSet",
    "GeneratorTrainer",
    "MemoryEstimate",
    "TrainConfig",
    "TrainingResourceError",
    "check_device",
    "convert_legacy_checkpoint",
    "crops_from_regions",
    "diff_augment",
    "layer_grid",
    "load_checkpoint",
    "load_defect_crops",
    "save_checkpoint",
]
