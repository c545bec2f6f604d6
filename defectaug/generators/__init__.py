"""Defect generators: procedural, a bank of real defects, learned ones, self-supervised ones."""

from defectaug.generators.bank import DefectBank, feather_alpha
from defectaug.generators.base import DefectGenerator
from defectaug.generators.dcdgan import DCDGAN, DCDGANConfig
from defectaug.generators.defectgan import DefectGAN, DefectGANConfig
from defectaug.generators.dfmgan import DFMGAN, DFMGANConfig
from defectaug.generators.hub import (
    PretrainedDefectGenerator,
    list_architectures,
    list_pretrained,
    register_architecture,
)
from defectaug.generators.procedural import (
    DEFECT_TYPES,
    CrackParams,
    PitParams,
    ProceduralGenerator,
    ScratchParams,
    SpotParams,
    StainParams,
    UnevenParams,
)
from defectaug.generators.registry import list_generators, load_generator, register_generator

# Imported after the registry: importing it registers "cutpaste", "nsa" and "texture".
from defectaug.generators.selfsup import CutPasteGenerator, NSAGenerator, TextureGenerator
from defectaug.generators.shapes import MASK_SHAPES

__all__ = [
    "DEFECT_TYPES",
    "MASK_SHAPES",
    "CrackParams",
    "CutPasteGenerator",
    "DCDGAN",
    "DCDGANConfig",
    "DFMGAN",
    "DFMGANConfig",
    "DefectBank",
    "DefectGAN",
    "DefectGANConfig",
    "DefectGenerator",
    "NSAGenerator",
    "PitParams",
    "PretrainedDefectGenerator",
    "ProceduralGenerator",
    "ScratchParams",
    "SpotParams",
    "StainParams",
    "TextureGenerator",
    "UnevenParams",
    "feather_alpha",
    "list_architectures",
    "list_generators",
    "list_pretrained",
    "load_generator",
    "register_architecture",
    "register_generator",
]
