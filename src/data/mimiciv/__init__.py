"""MIMIC-IV: concepts (schema), extraction to a Cohort (extract) and a synthetic MIMIC-IV
generator (synthetic) whose tables the same extractor reads."""

from src.data.mimiciv.extract import extract, extract_cohort
from src.data.mimiciv.synthetic import generate

__all__ = ["extract", "extract_cohort", "generate"]
