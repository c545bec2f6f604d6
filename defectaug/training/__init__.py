"""Training learned defect generators: real defect crops, the shared loop, architecture trainers."""

from defectaug.training.augment import diff_augment
from defectaug.training.data import DefectCropSet, crops_from_regions, load_defect_crops
from defectaug.training.trainer import (
    CHECKPOINT_NAME,
    TRAINERS,
    DCDGANTrainer,
    GeneratorTrainer,
    TrainConfig,
    layer_grid,
)

__all__ = [
    "CHECKPOINT_NAME",
    "TRAINERS",
    "DCDGANTrainer",
    "DefectCropSet",
    "GeneratorTrainer",
    "TrainConfig",
    "crops_from_regions",
    "diff_augment",
    "layer_grid",
    "load_defect_crops",
]
