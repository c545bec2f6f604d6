"""Defect generators: procedural, a bank of real defects, learned ones in the Hub format."""

from defectaug.generators.bank import DefectBank, feather_alpha
from defectaug.generators.base import DefectGenerator
from defectaug.generators.dcdgan import DCDGAN, DCDGANConfig
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

__all__ = [
    "DEFECT_TYPES",
    "CrackParams",
    "DCDGAN",
    "DCDGANConfig",
    "DefectBank",
    "DefectGenerator",
    "PitParams",
    "PretrainedDefectGenerator",
    "ProceduralGenerator",
    "ScratchParams",
    "SpotParams",
    "StainParams",
    "UnevenParams",
    "feather_alpha",
    "list_architectures",
    "list_generators",
    "list_pretrained",
    "load_generator",
    "register_architecture",
    "register_generator",
]
