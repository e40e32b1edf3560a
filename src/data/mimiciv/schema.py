"""MIMIC-IV concepts as data: what each feature is, its unit, its plausible range and where
MIMIC-IV (v2.x / v3.x) stores it.

Source of truth: ``docs/reference/mimiciv_concepts.md`` (the ricu / YAIB harmonised concept
dictionary). The extractor turns these rows into one itemid lookup table, so adding a concept
here is all it takes to extract it; the synthetic generator writes the same itemids and units.

A value read from MIMIC-IV becomes ``valuenum * mult + add`` in the concept's unit (temperature
in degrees Fahrenheit and height in inches are converted this way); values outside the concept's
plausible range after conversion are treated as charting errors and dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from src.data.cohort import FeatureSpec

# Tables an itemid can live in, and the column holding the numeric value.
VALUE_COLUMN = {"chartevents": "valuenum", "labevents": "valuenum", "outputevents": "value"}


@dataclass(frozen=True)
class Source:
    """One itemid of one MIMIC-IV table feeding a concept."""

    table: str  # "chartevents" | "labevents" | "outputevents"
    itemid: int
    uom: str  # valueuom as MIMIC-IV writes it for this itemid (documentation; not filtered on)
    mult: float = 1.0  # conversion into the concept's unit: valuenum * mult + add
    add: float = 0.0


@dataclass(frozen=True)
class Concept:
    name: str
    description: str
    unit: str
    kind: str  # "vital" | "lab" | "output" | "static"
    low: float | None
    high: float | None
    sources: tuple[Source, ...]
    agg: str = "mean"  # per hour bin: "mean", or "sum" for outputs

    def spec(self) -> FeatureSpec:
        return FeatureSpec(
            name=self.name,
            unit=self.unit,
            kind=self.kind,
            low=self.low,
            high=self.high,
            description=self.description,
        )


def _ce(*itemids: int, uom: str, mult: float = 1.0, add: float = 0.0) -> tuple[Source, ...]:
    return tuple(Source("chartevents", i, uom, mult, add) for i in itemids)


def _le(*itemids: int, uom: str) -> tuple[Source, ...]:
    return tuple(Source("labevents", i, uom) for i in itemids)


F_TO_C = dict(mult=1 / 1.8, add=-32 / 1.8)  # (F - 32) / 1.8

# Vitals, the common labs and urine output.
_CORE: tuple[Concept, ...] = (
    # vitals (icu/chartevents, by stay_id)
    Concept("hr", "heart rate", "bpm", "vital", 0, 300, _ce(220045, uom="bpm")),
    Concept(
        "sbp", "systolic blood pressure", "mmHg", "vital", 0, 300, _ce(220050, 220179, uom="mmHg")
    ),
    Concept(
        "dbp", "diastolic blood pressure", "mmHg", "vital", 0, 200, _ce(220051, 220180, uom="mmHg")
    ),
    Concept(
        "map",
        "mean arterial pressure",
        "mmHg",
        "vital",
        0,
        250,
        _ce(220052, 220181, 225312, uom="mmHg"),
    ),
    Concept(
        "resp",
        "respiratory rate",
        "insp/min",
        "vital",
        0,
        120,
        _ce(220210, 224688, 224689, 224690, uom="insp/min"),
    ),
    Concept(
        "o2sat",
        "oxygen saturation",
        "%",
        "vital",
        50,
        100,
        _ce(220277, 226253, 220227, uom="%") + _le(50817, uom="%"),
    ),
    Concept(
        "temp",
        "temperature",
        "C",
        "vital",
        32,
        42,
        _ce(223762, uom="°C") + _ce(223761, 224027, uom="°F", **F_TO_C),
    ),
    Concept(
        "fio2",
        "fraction of inspired oxygen",
        "%",
        "vital",
        21,
        100,
        _ce(223835, uom="%") + _le(50816, uom="%"),
    ),
    # labs (hosp/labevents, by subject_id and time: no stay_id there)
    Concept("crea", "creatinine", "mg/dL", "lab", 0, 15, _le(50912, uom="mg/dL")),
    Concept("bun", "blood urea nitrogen", "mg/dL", "lab", 0, 200, _le(51006, uom="mg/dL")),
    Concept("lact", "lactate", "mmol/L", "lab", 0, 50, _le(50813, uom="mmol/L")),
    Concept("bicar", "bicarbonate", "mEq/L", "lab", 5, 50, _le(50882, uom="mEq/L")),
    Concept("na", "sodium", "mEq/L", "lab", 110, 165, _le(50983, uom="mEq/L")),
    Concept("k", "potassium", "mEq/L", "lab", 0, 10, _le(50971, uom="mEq/L")),
    Concept("cl", "chloride", "mEq/L", "lab", 80, 130, _le(50902, uom="mEq/L")),
    Concept("glu", "glucose", "mg/dL", "lab", 0, 1000, _le(50809, 50931, uom="mg/dL")),
    Concept("wbc", "white blood cell count", "K/uL", "lab", 0, None, _le(51301, uom="K/uL")),
    Concept("hgb", "hemoglobin", "g/dL", "lab", 4, 18, _le(51222, uom="g/dL")),
    Concept("plt", "platelet count", "K/uL", "lab", 5, 1200, _le(51265, uom="K/uL")),
    Concept("bili", "total bilirubin", "mg/dL", "lab", 0, 100, _le(50885, uom="mg/dL")),
    Concept("ph", "pH of blood", "units", "lab", 6.8, 8, _le(50820, uom="units")),
    Concept("po2", "O2 partial pressure", "mmHg", "lab", 40, 600, _le(50821, uom="mm Hg")),
    Concept("pco2", "CO2 partial pressure", "mmHg", "lab", 10, 150, _le(50818, uom="mm Hg")),
    Concept(
        "inr_pt",
        "prothrombin time/international normalized ratio",
        "ratio",
        "lab",
        None,
        None,
        _le(51237, uom=""),
    ),
    Concept("mg", "magnesium", "mg/dL", "lab", 0.5, 5, _le(50960, uom="mg/dL")),
    Concept("alb", "albumin", "g/dL", "lab", 0, 6, _le(50862, uom="g/dL")),
    # outputs (icu/outputevents, by stay_id; summed per hour)
    Concept(
        "urine",
        "urine output",
        "mL",
        "output",
        0,
        2000,
        tuple(
            Source("outputevents", i, "ml")
            for i in (
                226557,
                226558,
                226559,
                226560,
                226561,
                226563,
                226564,
                226565,
                226566,
                226567,
                226584,
                227510,
            )
        ),
        agg="sum",
    ),
)

# Numeric statics charted in chartevents: first plausible value in the window, else NaN.
STATIC_CHART_CONCEPTS: tuple[Concept, ...] = (
    Concept(
        "height",
        "patient height",
        "cm",
        "static",
        10,
        230,
        _ce(226707, uom="Inch", mult=2.54) + _ce(226730, uom="cm"),
    ),
    Concept("weight", "patient weight", "kg", "static", 1, 500, _ce(226512, uom="kg")),
)

STATIC_NUM_NAMES = ["age", "height", "weight"]  # age = anchor_age + year(intime) - anchor_year
# (name, table, column) of the categorical statics
STATIC_CAT_COLUMNS = [
    ("gender", "patients", "gender"),
    ("admission_type", "admissions", "admission_type"),
    ("first_careunit", "icustays", "first_careunit"),
    ("insurance", "admissions", "insurance"),
]

# The rest of the ricu / YAIB lab concepts: YAIB's Mortality24 cohorts carry all 48, so the
# default set does too (the synthetic generator writes every one of them).
_MORE_LABS: tuple[Concept, ...] = (
    Concept("alp", "alkaline phosphatase", "IU/L", "lab", 0, None, _le(50863, uom="IU/L")),
    Concept("alt", "alanine aminotransferase", "IU/L", "lab", 0, None, _le(50861, uom="IU/L")),
    Concept("ast", "aspartate aminotransferase", "IU/L", "lab", 0, None, _le(50878, uom="IU/L")),
    Concept("be", "base excess", "mEq/L", "lab", -25, 25, _le(50802, uom="mEq/L")),
    Concept("bili_dir", "bilirubin direct", "mg/dL", "lab", 0, 50, _le(50883, uom="mg/dL")),
    Concept("bnd", "band form neutrophils", "%", "lab", None, None, _le(51144, uom="%")),
    Concept("ca", "calcium", "mg/dL", "lab", 4, 20, _le(50893, uom="mg/dL")),
    Concept("cai", "calcium ionized", "mmol/L", "lab", 0.5, 2, _le(50808, uom="mmol/L")),
    Concept("ck", "creatine kinase", "IU/L", "lab", 0, None, _le(50910, uom="IU/L")),
    Concept("ckmb", "creatine kinase MB", "ng/mL", "lab", 0, None, _le(50911, uom="ng/mL")),
    Concept(
        "crp",
        "C-reactive protein",
        "mg/L",
        "lab",
        0,
        None,
        (Source("labevents", 50889, "mg/dL", mult=10.0),),
    ),
    Concept("fgn", "fibrinogen", "mg/dL", "lab", 0, 1500, _le(51214, uom="mg/dL")),
    Concept("lymph", "lymphocytes", "%", "lab", 0, 100, _le(51244, uom="%")),
    Concept("mch", "mean corpuscular hemoglobin", "pg", "lab", 0, None, _le(51248, uom="pg")),
    Concept(
        "mchc", "mean corpuscular hemoglobin concentration", "%", "lab", 20, 50, _le(51249, uom="%")
    ),
    Concept("mcv", "mean corpuscular volume", "fL", "lab", 50, 150, _le(51250, uom="fL")),
    Concept("methb", "methemoglobin", "%", "lab", 0, 100, _le(50814, uom="%")),
    Concept("neut", "neutrophils", "%", "lab", 0, 100, _le(51256, uom="%")),
    Concept("phos", "phosphate", "mg/dL", "lab", 0, 40, _le(50970, uom="mg/dL")),
    Concept("ptt", "partial thromboplastin time", "sec", "lab", 0, None, _le(51275, uom="sec")),
    Concept("tnt", "troponin t", "ng/mL", "lab", 0, None, _le(51003, uom="ng/mL")),
)

# Time-varying concepts, in the order the Cohort's feature axis uses by default (YAIB's 48).
CONCEPTS: tuple[Concept, ...] = _CORE + _MORE_LABS
CONCEPT_BY_NAME = {c.name: c for c in CONCEPTS}


def concept_names() -> list[str]:
    """The default feature set (``features: null``): every concept ``data.features`` may name."""
    return [c.name for c in CONCEPTS]


def select_concepts(names: list[str] | tuple[str, ...] | None) -> list[Concept]:
    """Concepts by name in the order given (the default set, in schema order, for None)."""
    if names is None:
        return list(CONCEPTS)
    names = list(names)
    unknown = [n for n in names if n not in CONCEPT_BY_NAME]
    if unknown:
        raise KeyError(
            f"unknown feature concept(s) {', '.join(map(repr, unknown))}; "
            f"available: {', '.join(concept_names())}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"feature concepts listed twice: {names}")
    if not names:
        raise ValueError("features is empty: name at least one concept or use null for all")
    return [CONCEPT_BY_NAME[n] for n in names]


def feature_specs(names: list[str] | None = None) -> list[FeatureSpec]:
    return [c.spec() for c in select_concepts(names)]


# MIMIC-IV tables the extractor reads: folder, and the columns it needs with their SQL types
# (events.ARROW_TYPES maps them to pyarrow's; every other column of the file is skipped, not
# converted: events.convert_options).
TABLES: dict[str, tuple[str, dict[str, str]]] = {
    "patients": (
        "hosp",
        {
            "subject_id": "BIGINT",
            "gender": "VARCHAR",
            "anchor_age": "INTEGER",
            "anchor_year": "INTEGER",
            "dod": "DATE",
        },
    ),
    "admissions": (
        "hosp",
        {
            "subject_id": "BIGINT",
            "hadm_id": "BIGINT",
            "deathtime": "TIMESTAMP",
            "admission_type": "VARCHAR",
            "insurance": "VARCHAR",
            "hospital_expire_flag": "INTEGER",
        },
    ),
    "icustays": (
        "icu",
        {
            "subject_id": "BIGINT",
            "hadm_id": "BIGINT",
            "stay_id": "BIGINT",
            "first_careunit": "VARCHAR",
            "intime": "TIMESTAMP",
            "outtime": "TIMESTAMP",
        },
    ),
    "chartevents": (
        "icu",
        {"stay_id": "BIGINT", "charttime": "TIMESTAMP", "itemid": "INTEGER", "valuenum": "DOUBLE"},
    ),
    "labevents": (
        "hosp",
        {
            "subject_id": "BIGINT",
            "charttime": "TIMESTAMP",
            "itemid": "INTEGER",
            "valuenum": "DOUBLE",
        },
    ),
    "outputevents": (
        "icu",
        {"stay_id": "BIGINT", "charttime": "TIMESTAMP", "itemid": "INTEGER", "value": "DOUBLE"},
    ),
}
