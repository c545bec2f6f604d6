"""Defect generators: procedural, a bank of real defects, learned ones in the Hub format."""

from defectaug.generators.base import DefectGenerator
from defectaug.generators.hub import PretrainedDefectGenerator, register_architecture

__all__ = ["DefectGenerator", "PretrainedDefectGenerator", "register_architecture"]
