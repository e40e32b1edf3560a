"""MIMIC-IV: concepts (``schema``), extraction to a Cohort (``extract``) and a synthetic MIMIC-IV
generator (``synthetic``) whose tables the same extractor reads.

(``extract`` stays the submodule's name here: ``from src.data.mimiciv.extract import extract``.)"""

from src.data.mimiciv.extract import extract_cohort
from src.data.mimiciv.synthetic import generate

__all__ = ["extract_cohort", "generate"]
