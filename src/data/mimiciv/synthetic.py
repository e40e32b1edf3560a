"""A synthetic MIMIC-IV: tables with MIMIC-IV's names, columns, itemids, units and id ranges,
so the extractor that reads real MIMIC-IV is exercised unchanged by every test and run.

Generative story (vectorised over stays and measurements; no per-row Python):

- patients with one to four ICU stays, each stay in its own hospital admission; dates shifted into
  2110-2210 with MIMIC-IV's anchor_year logic (age at a stay = anchor_age + year - anchor_year);
- per stay a latent severity ``s`` and a deterioration rate ``d`` (both standard normal) and an
  idiosyncratic per-feature baseline; every vital and lab is a transform of
  ``beta_s * s + beta_d * d * hours / 24 + rho * baseline + noise`` with the feature's own
  direction and strength, so the sick look sick on average but individuals overlap;
- in-hospital death ~ Bernoulli(sigmoid(a + g_s * s + g_d * d + g_age * age_z + admission type));
  only a patient's last admission can end in death, some deaths fall in the first 24 hours, some
  stays are shorter than 30 hours and some patients are minors (all excluded by extraction);
- charting like an ICU: vitals about hourly (mostly on the clock hour, sometimes twice an hour),
  temperature every few hours in degrees Fahrenheit (some Celsius), labs in panels a few times a
  day (sicker patients get more), urine output most hours, a few charting errors out of range,
  labs before ICU admission, and unrelated itemids the extractor must skip.

Same seed, same bytes: every file is gzip with mtime 0, rows sorted, values rounded.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np

GENERATOR_VERSION = 3
HORIZON_HOURS = 48  # measurements are generated for the first 48 ICU hours of each stay
CHUNK_STAYS = 10_000  # measurements are generated and written this many stays at a time

# --- feature model -------------------------------------------------------------------------
# name: (transform, centre, scale, beta_s, beta_d, noise, decimals)
# transform "normal": centre + scale * x; "log": centre * exp(scale * x) (centre is the median);
# "deficit": 100 - centre * exp(scale * x) (oxygen saturation, neutrophil share).
# Centres and scales follow the real hourly values of docs/reference/icu_value_distributions.md,
# heavy lab tails included. As in real ICU data, the vitals say little about death on their own
# (|beta| <= 0.08) and the labs carry the signal: creatinine, lactate, BUN, bilirubin, platelets,
# albumin, INR and the liver and cardiac enzymes.
FEATURE_MODEL: dict[str, tuple[str, float, float, float, float, float, int]] = {
    # vitals
    "hr": ("normal", 86.8, 18.0, 0.08, 0.06, 0.45, 0),
    "sbp": ("normal", 118.5, 21.0, -0.06, -0.06, 0.45, 0),
    "dbp": ("normal", 58.6, 13.5, -0.04, -0.04, 0.45, 0),
    "resp": ("normal", 19.9, 6.3, 0.06, 0.05, 0.50, 0),
    "o2sat": ("deficit", 2.2, 0.85, 0.04, 0.04, 0.50, 0),
    "temp": ("normal", 36.82, 0.9, 0.0, 0.03, 0.45, 1),
    "fio2": ("normal", 55.0, 20.0, 0.08, 0.05, 0.35, 0),
    # labs that carry the label signal
    "crea": ("log", 1.1, 0.72, 0.45, 0.30, 0.12, 1),
    "bun": ("log", 26.0, 0.58, 0.40, 0.20, 0.10, 0),
    "lact": ("log", 2.1, 0.68, 0.45, 0.45, 0.25, 1),
    "bili": ("log", 1.1, 1.30, 0.35, 0.20, 0.12, 1),
    "plt": ("log", 190.0, 0.45, -0.35, -0.30, 0.12, 0),
    "alb": ("normal", 2.95, 0.72, -0.35, -0.15, 0.12, 1),
    "inr_pt": ("log", 1.45, 0.6, 0.30, 0.20, 0.10, 1),
    "bicar": ("normal", 23.8, 5.0, -0.30, -0.25, 0.25, 0),
    "ph": ("normal", 7.36, 0.095, -0.30, -0.30, 0.35, 2),
    "be": ("normal", -1.3, 6.2, -0.30, -0.25, 0.30, 0),
    "ptt": ("log", 39.0, 0.72, 0.25, 0.15, 0.20, 1),
    "fgn": ("log", 240.0, 0.60, -0.25, -0.15, 0.15, 0),
    "alt": ("log", 33.0, 1.75, 0.30, 0.15, 0.15, 0),
    "ast": ("log", 57.0, 1.75, 0.30, 0.15, 0.15, 0),
    "ck": ("log", 130.0, 1.5, 0.25, 0.10, 0.20, 0),
    "ckmb": ("log", 9.5, 1.00, 0.25, 0.10, 0.20, 0),
    "tnt": ("log", 0.09, 1.55, 0.15, 0.05, 0.20, 2),
    "phos": ("log", 3.5, 0.42, 0.20, 0.15, 0.20, 1),
    "wbc": ("log", 10.5, 0.55, 0.15, 0.20, 0.20, 1),
    "bili_dir": ("log", 2.2, 1.10, 0.30, 0.10, 0.15, 1),
    "crp": ("log", 8.0, 0.90, 0.15, 0.10, 0.20, 1),  # mg/dL as MIMIC-IV writes it; mg/L after
    # labs with little or no signal
    "na": ("normal", 139.9, 6.5, 0.03, 0.02, 0.25, 0),
    "k": ("normal", 4.05, 0.70, 0.05, 0.05, 0.35, 1),
    "cl": ("normal", 106.2, 8.0, -0.08, 0.0, 0.25, 0),
    "glu": ("log", 135.0, 0.38, 0.10, 0.08, 0.40, 0),
    "hgb": ("normal", 10.0, 1.5, -0.05, -0.05, 0.20, 1),
    "po2": ("log", 125.0, 0.55, -0.08, -0.08, 0.50, 0),
    "pco2": ("log", 41.0, 0.30, 0.02, 0.05, 0.40, 0),
    "mg": ("normal", 2.03, 0.46, 0.02, 0.0, 0.35, 1),
    "alp": ("log", 113.0, 0.75, 0.10, 0.05, 0.15, 0),
    "ca": ("normal", 8.17, 0.81, -0.05, -0.05, 0.30, 1),
    "cai": ("normal", 1.10, 0.12, -0.15, -0.10, 0.30, 2),
    "mch": ("normal", 29.0, 3.1, 0.0, 0.0, 0.10, 1),
    "mchc": ("normal", 33.5, 1.7, 0.02, 0.0, 0.30, 1),
    "mcv": ("normal", 86.4, 8.3, 0.0, 0.0, 0.10, 0),
    "methb": ("log", 0.7, 0.50, 0.0, 0.0, 0.40, 1),
    "lymph": ("log", 8.5, 0.85, -0.10, -0.10, 0.30, 1),
    "neut": ("deficit", 18.0, 0.55, 0.08, 0.05, 0.30, 1),
    "bnd": ("log", 3.0, 1.10, 0.15, 0.10, 0.30, 0),
    # output
    "urine": ("log", 62.0, 0.90, -0.08, -0.08, 0.70, 0),
}
FEATURES = list(FEATURE_MODEL)
FIDX = {n: i for i, n in enumerate(FEATURES)}
PERCENT = ("lymph", "neut", "bnd", "methb")  # shares: kept inside [0, 100]

# death model: logit = DEATH_A + DEATH_S * s + DEATH_D * d + DEATH_AGE * (age - 65) / 15
DEATH_A, DEATH_S, DEATH_D, DEATH_AGE = -3.6, 2.6, 0.9, 0.5

# lab panels: (itemid, feature or None for an item no concept uses, probability in a draw)
PANELS = {
    "bmp": [
        (50983, "na", 0.98),
        (50971, "k", 0.98),
        (50902, "cl", 0.98),
        (50882, "bicar", 0.98),
        (51006, "bun", 0.98),
        (50912, "crea", 0.98),
        (50931, "glu", 0.95),
        (50868, None, 0.95),
        (50960, "mg", 0.85),
        (50893, "ca", 0.85),
        (50970, "phos", 0.80),
    ],
    "cbc": [
        (51301, "wbc", 0.98),
        (51222, "hgb", 0.98),
        (51265, "plt", 0.97),
        (51279, None, 0.97),
        (51248, "mch", 0.97),
        (51249, "mchc", 0.97),
        (51250, "mcv", 0.97),
    ],
    "coag": [(51237, "inr_pt", 0.98), (51275, "ptt", 0.95), (51214, "fgn", 0.15)],
    "bg": [
        (50820, "ph", 0.97),
        (50821, "po2", 0.95),
        (50818, "pco2", 0.95),
        (50802, "be", 0.95),
        (50813, "lact", 0.55),
        (50808, "cai", 0.35),
        (50809, "glu", 0.15),
        (50814, "methb", 0.02),
    ],
    "lft": [
        (50885, "bili", 0.95),
        (50862, "alb", 0.85),
        (50863, "alp", 0.95),
        (50861, "alt", 0.95),
        (50878, "ast", 0.95),
        (50883, "bili_dir", 0.15),
    ],
    "diff": [(51244, "lymph", 0.98), (51256, "neut", 0.98), (51144, "bnd", 0.35)],
    "cardiac": [(50910, "ck", 0.90), (50911, "ckmb", 0.70), (51003, "tnt", 0.75)],
    "crp": [(50889, "crp", 1.0)],
}
PANEL_RATE = {  # draws per hour
    "bmp": 0.085,
    "cbc": 0.075,
    "coag": 0.065,
    "bg": 0.055,
    "lft": 0.022,
    "diff": 0.02,
    "cardiac": 0.025,
    "crp": 0.002,
}

D_LABITEMS = [  # itemid, label, fluid, category, valueuom, ref lower, ref upper
    (50802, "Base Excess", "Blood", "Blood Gas", "mEq/L", -2, 3),
    (50808, "Free Calcium", "Blood", "Blood Gas", "mmol/L", 1.12, 1.32),
    (50809, "Glucose", "Blood", "Blood Gas", "mg/dL", 70, 105),
    (50813, "Lactate", "Blood", "Blood Gas", "mmol/L", 0.5, 2),
    (50814, "Methemoglobin", "Blood", "Blood Gas", "%", 0, 2),
    (50816, "Oxygen", "Blood", "Blood Gas", "%", None, None),
    (50817, "Oxygen Saturation", "Blood", "Blood Gas", "%", None, None),
    (50818, "pCO2", "Blood", "Blood Gas", "mm Hg", 35, 45),
    (50820, "pH", "Blood", "Blood Gas", "units", 7.35, 7.45),
    (50821, "pO2", "Blood", "Blood Gas", "mm Hg", 85, 105),
    (50861, "Alanine Aminotransferase (ALT)", "Blood", "Chemistry", "IU/L", 0, 40),
    (50862, "Albumin", "Blood", "Chemistry", "g/dL", 3.5, 5.2),
    (50863, "Alkaline Phosphatase", "Blood", "Chemistry", "IU/L", 35, 105),
    (50868, "Anion Gap", "Blood", "Chemistry", "mEq/L", 8, 20),
    (50878, "Asparate Aminotransferase (AST)", "Blood", "Chemistry", "IU/L", 0, 40),
    (50882, "Bicarbonate", "Blood", "Chemistry", "mEq/L", 22, 32),
    (50883, "Bilirubin, Direct", "Blood", "Chemistry", "mg/dL", 0, 0.3),
    (50885, "Bilirubin, Total", "Blood", "Chemistry", "mg/dL", 0, 1.5),
    (50889, "C-Reactive Protein", "Blood", "Chemistry", "mg/dL", 0, 0.5),
    (50893, "Calcium, Total", "Blood", "Chemistry", "mg/dL", 8.4, 10.3),
    (50902, "Chloride", "Blood", "Chemistry", "mEq/L", 96, 108),
    (50910, "Creatine Kinase (CK)", "Blood", "Chemistry", "IU/L", 51, 294),
    (50911, "Creatine Kinase, MB Isoenzyme", "Blood", "Chemistry", "ng/mL", 0, 10),
    (50912, "Creatinine", "Blood", "Chemistry", "mg/dL", 0.5, 1.2),
    (50931, "Glucose", "Blood", "Chemistry", "mg/dL", 70, 100),
    (50960, "Magnesium", "Blood", "Chemistry", "mg/dL", 1.6, 2.6),
    (50970, "Phosphate", "Blood", "Chemistry", "mg/dL", 2.7, 4.5),
    (50971, "Potassium", "Blood", "Chemistry", "mEq/L", 3.3, 5.1),
    (50983, "Sodium", "Blood", "Chemistry", "mEq/L", 133, 145),
    (51003, "Troponin T", "Blood", "Chemistry", "ng/mL", 0, 0.01),
    (51006, "Urea Nitrogen", "Blood", "Chemistry", "mg/dL", 6, 20),
    (51144, "Bands", "Blood", "Hematology", "%", 0, 5),
    (51214, "Fibrinogen, Functional", "Blood", "Hematology", "mg/dL", 200, 400),
    (51222, "Hemoglobin", "Blood", "Hematology", "g/dL", 13.7, 17.5),
    (51237, "INR(PT)", "Blood", "Hematology", None, 0.9, 1.1),
    (51244, "Lymphocytes", "Blood", "Hematology", "%", 18, 42),
    (51248, "MCH", "Blood", "Hematology", "pg", 26, 32),
    (51249, "MCHC", "Blood", "Hematology", "%", 31, 37),
    (51250, "MCV", "Blood", "Hematology", "fL", 80, 100),
    (51256, "Neutrophils", "Blood", "Hematology", "%", 50, 70),
    (51265, "Platelet Count", "Blood", "Hematology", "K/uL", 150, 400),
    (51275, "PTT", "Blood", "Hematology", "sec", 25, 36.5),
    (51279, "Red Blood Cells", "Blood", "Hematology", "m/uL", 4.6, 6.1),
    (51301, "White Blood Cells", "Blood", "Hematology", "K/uL", 4, 10),
]

D_ITEMS = [  # itemid, label, abbreviation, linksto, category, unitname, param_type, low, high
    (
        220045,
        "Heart Rate",
        "HR",
        "chartevents",
        "Routine Vital Signs",
        "bpm",
        "Numeric",
        None,
        None,
    ),
    (
        220048,
        "Heart Rhythm",
        "Heart Rhythm",
        "chartevents",
        "Routine Vital Signs",
        None,
        "Text",
        None,
        None,
    ),
    (
        220050,
        "Arterial Blood Pressure systolic",
        "ABPs",
        "chartevents",
        "Routine Vital Signs",
        "mmHg",
        "Numeric",
        90,
        140,
    ),
    (
        220051,
        "Arterial Blood Pressure diastolic",
        "ABPd",
        "chartevents",
        "Routine Vital Signs",
        "mmHg",
        "Numeric",
        60,
        90,
    ),
    (
        220052,
        "Arterial Blood Pressure mean",
        "ABPm",
        "chartevents",
        "Routine Vital Signs",
        "mmHg",
        "Numeric",
        None,
        None,
    ),
    (
        220179,
        "Non Invasive Blood Pressure systolic",
        "NBPs",
        "chartevents",
        "Routine Vital Signs",
        "mmHg",
        "Numeric",
        90,
        140,
    ),
    (
        220180,
        "Non Invasive Blood Pressure diastolic",
        "NBPd",
        "chartevents",
        "Routine Vital Signs",
        "mmHg",
        "Numeric",
        60,
        90,
    ),
    (
        220181,
        "Non Invasive Blood Pressure mean",
        "NBPm",
        "chartevents",
        "Routine Vital Signs",
        "mmHg",
        "Numeric",
        None,
        None,
    ),
    (220210, "Respiratory Rate", "RR", "chartevents", "Respiratory", "insp/min", "Numeric", 14, 20),
    (
        220227,
        "Arterial O2 Saturation",
        "Art O2 Sat",
        "chartevents",
        "Labs",
        "%",
        "Numeric",
        92,
        100,
    ),
    (
        220277,
        "O2 saturation pulseoxymetry",
        "SpO2",
        "chartevents",
        "Respiratory",
        "%",
        "Numeric",
        90,
        100,
    ),
    (
        223761,
        "Temperature Fahrenheit",
        "Temperature F",
        "chartevents",
        "Routine Vital Signs",
        "°F",
        "Numeric",
        None,
        None,
    ),
    (
        223762,
        "Temperature Celsius",
        "Temperature C",
        "chartevents",
        "Routine Vital Signs",
        "°C",
        "Numeric",
        None,
        None,
    ),
    (
        223835,
        "Inspired O2 Fraction",
        "FiO2",
        "chartevents",
        "Respiratory",
        None,
        "Numeric",
        None,
        None,
    ),
    (
        224027,
        "Skin Temperature",
        "Skin Temp",
        "chartevents",
        "Skin - Assessment",
        None,
        "Text",
        None,
        None,
    ),
    (
        224688,
        "Respiratory Rate (Set)",
        "Resp Rate (Set)",
        "chartevents",
        "Respiratory",
        "insp/min",
        "Numeric",
        None,
        None,
    ),
    (
        224689,
        "Respiratory Rate (spontaneous)",
        "Resp Rate (Spont)",
        "chartevents",
        "Respiratory",
        "insp/min",
        "Numeric",
        None,
        None,
    ),
    (
        224690,
        "Respiratory Rate (Total)",
        "Resp Rate (Total)",
        "chartevents",
        "Respiratory",
        "insp/min",
        "Numeric",
        None,
        None,
    ),
    (
        225312,
        "ART BP Mean",
        "ART BP Mean",
        "chartevents",
        "Routine Vital Signs",
        "mmHg",
        "Numeric",
        None,
        None,
    ),
    (
        226253,
        "SpO2 Desat Limit",
        "SpO2 Desat Limit",
        "chartevents",
        "Alarms",
        "%",
        "Numeric",
        None,
        None,
    ),
    (
        226512,
        "Admission Weight (Kg)",
        "Admission Weight (Kg)",
        "chartevents",
        "General",
        "kg",
        "Numeric",
        None,
        None,
    ),
    (226707, "Height", "Height", "chartevents", "General", "Inch", "Numeric", None, None),
    (226730, "Height (cm)", "Height (cm)", "chartevents", "General", "cm", "Numeric", None, None),
    (
        226557,
        "R Ureteral Stent",
        "R Ureteral Stent",
        "outputevents",
        "Output",
        "mL",
        "Numeric",
        None,
        None,
    ),
    (
        226558,
        "L Ureteral Stent",
        "L Ureteral Stent",
        "outputevents",
        "Output",
        "mL",
        "Numeric",
        None,
        None,
    ),
    (226559, "Foley", "Foley", "outputevents", "Output", "mL", "Numeric", None, None),
    (226560, "Void", "Void", "outputevents", "Output", "mL", "Numeric", None, None),
    (226561, "Condom Cath", "Condom Cath", "outputevents", "Output", "mL", "Numeric", None, None),
    (226563, "Suprapubic", "Suprapubic", "outputevents", "Output", "mL", "Numeric", None, None),
    (
        226564,
        "R Nephrostomy",
        "R Nephrostomy",
        "outputevents",
        "Output",
        "mL",
        "Numeric",
        None,
        None,
    ),
    (
        226565,
        "L Nephrostomy",
        "L Nephrostomy",
        "outputevents",
        "Output",
        "mL",
        "Numeric",
        None,
        None,
    ),
    (
        226566,
        "Urine and GU Irrigant Out",
        "Urine and GU Irrigant Out",
        "outputevents",
        "Output",
        "mL",
        "Numeric",
        None,
        None,
    ),
    (
        226567,
        "Straight Cath",
        "Straight Cath",
        "outputevents",
        "Output",
        "mL",
        "Numeric",
        None,
        None,
    ),
    (226584, "Ileoconduit", "Ileoconduit", "outputevents", "Output", "mL", "Numeric", None, None),
    (
        226588,
        "Chest Tube #1",
        "Chest Tube #1",
        "outputevents",
        "Output",
        "mL",
        "Numeric",
        None,
        None,
    ),
    (
        227510,
        "TF Residual Output",
        "TF Residual Output",
        "outputevents",
        "Output",
        "mL",
        "Numeric",
        None,
        None,
    ),
]

ADMISSION_TYPES = [  # (name, probability, severity shift)
    ("EW EMER.", 0.42, 0.15),
    ("URGENT", 0.16, 0.10),
    ("OBSERVATION ADMIT", 0.08, -0.10),
    ("SURGICAL SAME DAY ADMISSION", 0.10, -0.55),
    ("DIRECT EMER.", 0.07, 0.10),
    ("ELECTIVE", 0.08, -0.65),
    ("EU OBSERVATION", 0.04, 0.0),
    ("DIRECT OBSERVATION", 0.03, 0.0),
    ("AMBULATORY OBSERVATION", 0.02, -0.2),
]
CAREUNITS = [
    ("Medical Intensive Care Unit (MICU)", 0.21),
    ("Cardiac Vascular Intensive Care Unit (CVICU)", 0.17),
    ("Medical/Surgical Intensive Care Unit (MICU/SICU)", 0.17),
    ("Surgical Intensive Care Unit (SICU)", 0.14),
    ("Trauma SICU (TSICU)", 0.11),
    ("Coronary Care Unit (CCU)", 0.11),
    ("Neuro Surgical Intensive Care Unit (Neuro SICU)", 0.03),
    ("Neuro Intermediate", 0.04),
    ("Neuro Stepdown", 0.02),
]
INSURANCE = [("Medicare", 0.45), ("Other", 0.45), ("Medicaid", 0.10)]
ADMISSION_LOCATIONS = [
    ("EMERGENCY ROOM", 0.5),
    ("TRANSFER FROM HOSPITAL", 0.2),
    ("PHYSICIAN REFERRAL", 0.2),
    ("WALK-IN/SELF REFERRAL", 0.05),
    ("PROCEDURE SITE", 0.05),
]
DISCHARGE_LOCATIONS = [
    ("HOME", 0.35),
    ("HOME HEALTH CARE", 0.3),
    ("SKILLED NURSING FACILITY", 0.2),
    ("REHAB", 0.1),
    ("CHRONIC/LONG TERM ACUTE CARE", 0.05),
]
MARITAL = [("MARRIED", 0.45), ("SINGLE", 0.3), ("WIDOWED", 0.15), ("DIVORCED", 0.07), ("", 0.03)]
RACE = [
    ("WHITE", 0.65),
    ("BLACK/AFRICAN AMERICAN", 0.1),
    ("OTHER", 0.05),
    ("UNKNOWN", 0.08),
    ("HISPANIC/LATINO - PUERTO RICAN", 0.04),
    ("ASIAN", 0.04),
    ("WHITE - OTHER EUROPEAN", 0.04),
]
YEAR_GROUPS = ["2008 - 2010", "2011 - 2013", "2014 - 2016", "2017 - 2019", "2020 - 2022"]

HOUR = 3600
DAY = 86400


def _pick(rng, table, n):
    names = np.array([t[0] for t in table], dtype=object)
    p = np.array([t[1] for t in table], dtype=float)
    idx = rng.choice(len(table), size=n, p=p / p.sum())
    return names[idx], idx


def _ids(rng, base: int, span: int, n: int) -> np.ndarray:
    """n distinct ids in [base, base + span), in random order."""
    step = max(1, span // max(n, 1))
    ids = base + np.cumsum(rng.integers(1, step + 1, size=n))
    return rng.permutation(ids)


def _epoch(year: np.ndarray) -> np.ndarray:
    """Seconds since 1970 of 1 January of ``year``."""
    return (
        (np.asarray(year) - 1970).astype("datetime64[Y]").astype("datetime64[s]").astype(np.int64)
    )


def _transform(name: str, x: np.ndarray) -> np.ndarray:
    kind, centre, scale, *_ = FEATURE_MODEL[name]
    if kind == "normal":
        v = centre + scale * x
    elif kind == "log":
        v = centre * np.exp(scale * x)
    else:
        return 100.0 - centre * np.exp(scale * x)
    return np.clip(v, 0.0, 100.0) if name in PERCENT else v


# --- writing -----------------------------------------------------------------------------
def _write(path: Path, columns: dict, order: np.ndarray | None = None) -> None:
    """Write columns as a deterministic .csv.gz (see ``_GzCsv``)."""
    w = _GzCsv(path)
    try:
        w.write(columns, order)
    finally:
        w.close()


class _GzCsv:
    """A .csv.gz written in pieces: gzip with mtime 0 (same rows, same bytes), header once.

    Formatting and compression run on background threads (pyarrow's CSV writer and zlib
    release the GIL), so the generator draws the next chunk meanwhile. Each file has one
    compressing thread, which takes its pieces in the order they were written: the bytes do not
    depend on the threads."""

    _format = None  # a thread pool shared by every writer, for the CSV bodies

    def __init__(self, path: Path):
        from concurrent.futures import ThreadPoolExecutor

        if _GzCsv._format is None:
            _GzCsv._format = ThreadPoolExecutor(2, thread_name_prefix="csv")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "wb")  # closed in close()
        self._gz = gzip.GzipFile(filename="", mode="wb", fileobj=self._fh, compresslevel=1, mtime=0)
        self._header = False
        self._compress = ThreadPoolExecutor(1, thread_name_prefix="gzip")
        self._pending: list = []

    def write(self, columns: dict, order: np.ndarray | None = None) -> None:
        if not self._header:
            self._gz.write((",".join(columns) + "\n").encode())
            self._header = True
        body = self._format.submit(_csv_body, columns, order)
        self._pending.append(self._compress.submit(lambda: self._gz.write(body.result())))

    def close(self) -> None:
        try:
            self._compress.shutdown(wait=True)
            for f in self._pending:
                f.result()  # a failure in a background write is raised here
        finally:
            self._gz.close()
            self._fh.close()


def _csv_body(columns: dict, order: np.ndarray | None = None) -> bytes:
    """CSV rows (no header) of columns: numpy arrays, int64 seconds for TIME_COLS/DATE_COLS."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    arrays = {}
    for name, col in columns.items():
        if isinstance(col, pa.Array | pa.ChunkedArray):
            arr = col
        elif name in TIME_COLS:
            col = np.asarray(col, dtype=np.int64)
            arr = pa.array(col, type=pa.timestamp("s"), mask=col == NO_TIME)
        elif name in DATE_COLS:
            col = np.asarray(col, dtype=np.int64)
            arr = pa.array((col // DAY).astype(np.int32), type=pa.date32(), mask=col == NO_TIME)
        else:
            col = np.asarray(col)
            if col.dtype == object:
                arr = pa.array(col, type=pa.string(), from_pandas=True)
                arr = pa.compute.if_else(
                    pa.compute.equal(arr, ""), pa.scalar(None, pa.string()), arr
                )
            else:
                arr = pa.array(col, from_pandas=True)
        arrays[name] = arr
    table = pa.table(arrays)
    if order is not None:
        table = table.take(pa.array(order))
    buf = io.BytesIO()
    pacsv.write_csv(
        table,
        buf,
        pacsv.WriteOptions(include_header=False, quoting_style="needed", batch_size=1 << 16),
    )
    body = buf.getvalue()
    # arrow's "needed" style quotes every string; MIMIC-IV quotes only strings holding a comma.
    # Where no string holds a comma or a quote, every quote in the body is such a wrapper.
    if not any(_has_special(a) for a in arrays.values()):
        body = body.replace(b'"', b"")
    return body


def _has_special(arr) -> bool:
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pa.types.is_string(arr.type):
        return False
    return bool(pc.any(pc.match_substring_regex(arr, '[,"\\n]')).as_py())


TIME_COLS = {
    "admittime",
    "dischtime",
    "deathtime",
    "edregtime",
    "edouttime",
    "intime",
    "outtime",
    "charttime",
    "storetime",
}
DATE_COLS = {"dod"}
NO_TIME = np.iinfo(np.int64).min


def _fmt(values: np.ndarray, decimals: np.ndarray | int):
    """Rounded float64 values and their text as MIMIC-IV's ``value`` column writes them."""
    import pyarrow as pa
    import pyarrow.compute as pc

    v = np.round(values, decimals) if np.isscalar(decimals) else _round_each(values, decimals)
    return v, pc.cast(pa.array(v), pa.string())


def _round_each(values, decimals):
    out = np.empty_like(values)
    for dec in np.unique(decimals):
        m = decimals == dec
        out[m] = np.round(values[m], int(dec))
    return out


# --- the generator -----------------------------------------------------------------------
def generate(root: Path, n_stays: int, seed: int) -> None:
    """Write a synthetic MIMIC-IV with ``n_stays`` ICU stays under ``root`` (``hosp/`` and
    ``icu/`` folders of ``.csv.gz`` files). Same ``(n_stays, seed)``: byte-identical files."""

    root = Path(root)
    if n_stays < 1:
        raise ValueError(f"n_stays must be positive, got {n_stays}")
    rng = np.random.default_rng([seed, GENERATOR_VERSION])

    # patients and how many stays each has
    counts = rng.choice([1, 2, 3, 4], size=n_stays, p=[0.80, 0.13, 0.05, 0.02])
    cum = np.cumsum(counts)
    n_pat = int(np.searchsorted(cum, n_stays) + 1)
    counts = counts[:n_pat]
    counts[-1] -= cum[n_pat - 1] - n_stays
    pat = np.repeat(np.arange(n_pat), counts)
    order = np.arange(n_stays) - np.repeat(np.cumsum(counts) - counts, counts)
    is_last = order == counts[pat] - 1
    S = n_stays

    subject_ids = np.sort(_ids(rng, 10_000_000, 9_000_000, n_pat))  # chunks stay sorted
    gender = np.where(rng.random(n_pat) < 0.56, "M", "F").astype(object)
    minor = rng.random(n_pat) < 0.02
    anchor_age = np.where(
        minor, rng.integers(1, 18, n_pat), np.clip(np.round(rng.normal(64, 17, n_pat)), 18, 91)
    ).astype(np.int64)
    anchor_year = rng.integers(2110, 2200, n_pat)
    year_group = np.array(YEAR_GROUPS, dtype=object)[rng.integers(0, len(YEAR_GROUPS), n_pat)]

    # stay-level categories and latent state
    adm_type, adm_idx = _pick(rng, ADMISSION_TYPES, S)
    sev_shift = np.array([t[2] for t in ADMISSION_TYPES])[adm_idx]
    careunit, _ = _pick(rng, CAREUNITS, S)
    insurance_p, _ = _pick(rng, INSURANCE, n_pat)
    insurance = insurance_p[pat]
    age0 = anchor_age[pat] + order  # approximate age for the death model (exact age below)

    def draw_latent(n):
        return rng.standard_normal(n), rng.standard_normal(n)

    sev, det = draw_latent(S)
    sev = sev + sev_shift

    def death_p(s, d, a):
        z = DEATH_A + DEATH_S * s + DEATH_D * d + DEATH_AGE * (a - 65) / 15
        return 1 / (1 + np.exp(-z))

    died = rng.random(S) < death_p(sev, det, age0)
    # only a patient's last admission can end in death: redraw the others until they survive
    for _ in range(200):
        redo = np.flatnonzero(died & ~is_last)
        if redo.size == 0:
            break
        s_new, d_new = draw_latent(redo.size)
        sev[redo] = s_new + sev_shift[redo]
        det[redo] = d_new
        died[redo] = rng.random(redo.size) < death_p(sev[redo], det[redo], age0[redo])
    died &= is_last

    # dates: admissions in sequence per patient
    admittime = np.empty(S, np.int64)
    intime = np.empty(S, np.int64)
    outtime = np.empty(S, np.int64)
    dischtime = np.empty(S, np.int64)
    deathtime = np.full(S, NO_TIME, np.int64)
    start = _epoch(anchor_year) + rng.integers(0, int(2.5 * 365 * DAY), n_pat)
    prev_end = start.copy()
    # hours from ICU admission to death: some within the first day, most later
    early = rng.random(S) < 0.13
    t_death = np.where(
        early,
        rng.uniform(1.0, 24.0, S),
        24.0 + rng.lognormal(np.log(110.0), 0.9, S) * np.exp(-0.2 * sev),
    )
    los_h = rng.lognormal(np.log(50.0), 0.8, S) * np.exp(0.15 * sev)
    in_icu = rng.random(S) < 0.8  # deaths in the ICU end the ICU stay
    los_h = np.where(
        died & in_icu,
        t_death,
        np.where(died, np.minimum(los_h, t_death * rng.uniform(0.3, 0.9, S)), los_h),
    )
    los_h = np.maximum(los_h, 0.3)
    for k in range(int(counts.max())):
        m = np.flatnonzero(order == k)
        p = pat[m]
        gap = np.where(k == 0, 0, rng.integers(20 * DAY, 400 * DAY, m.size))
        admittime[m] = (prev_end[p] + gap) // 60 * 60
        intime[m] = admittime[m] + rng.integers(HOUR // 2, 48 * HOUR, m.size)
        outtime[m] = intime[m] + (los_h[m] * HOUR).astype(np.int64)
        deathtime[m] = np.where(
            died[m], intime[m] + (t_death[m] * HOUR).astype(np.int64) // 60 * 60, NO_TIME
        )
        after = rng.integers(12 * HOUR, 12 * DAY, m.size)
        dischtime[m] = np.where(died[m], deathtime[m], (outtime[m] + after) // 60 * 60)
        prev_end[p] = dischtime[m]
    intime_year = intime.astype("datetime64[s]").astype("datetime64[Y]").astype(np.int64) + 1970
    age = anchor_age[pat] + (intime_year - anchor_year[pat])

    # date of death: in-hospital deaths, and some survivors dying after discharge
    last = np.flatnonzero(is_last)
    dod = np.full(n_pat, NO_TIME, np.int64)
    dod[pat[last]] = np.where(died[last], deathtime[last] // DAY * DAY, NO_TIME)
    later = (~died[last]) & (rng.random(last.size) < 0.12)
    dod[pat[last[later]]] = (
        (dischtime[last[later]] + rng.integers(3 * DAY, 365 * DAY, later.sum())) // DAY * DAY
    )

    subject_id = subject_ids[pat]
    hadm_id = _ids(rng, 20_000_000, 9_000_000, S)
    stay_id = _ids(rng, 30_000_000, 9_000_000, S)

    # ---------------- hosp/patients, hosp/admissions, icu/icustays ----------------------
    hosp, icu = root / "hosp", root / "icu"
    _write(
        hosp / "patients.csv.gz",
        {
            "subject_id": subject_ids,
            "gender": gender,
            "anchor_age": anchor_age,
            "anchor_year": anchor_year,
            "anchor_year_group": year_group,
            "dod": dod,
        },
        order=np.argsort(subject_ids, kind="stable"),
    )

    adm_loc, _ = _pick(rng, ADMISSION_LOCATIONS, S)
    dis_loc, _ = _pick(rng, DISCHARGE_LOCATIONS, S)
    dis_loc = np.where(died, "DIED", dis_loc).astype(object)
    marital_p, _ = _pick(rng, MARITAL, n_pat)
    race_p, _ = _pick(rng, RACE, n_pat)
    emergency = np.isin(adm_type, ["EW EMER.", "URGENT", "DIRECT EMER.", "EU OBSERVATION"])
    edreg = np.where(emergency, admittime - rng.integers(HOUR, 12 * HOUR, S) // 60 * 60, NO_TIME)
    edout = np.where(emergency, admittime + rng.integers(0, HOUR, S) // 60 * 60, NO_TIME)
    provider = np.array([f"P{x:05X}" for x in rng.integers(0, 16**5, 512)], dtype=object)
    _write(
        hosp / "admissions.csv.gz",
        {
            "subject_id": subject_id,
            "hadm_id": hadm_id,
            "admittime": admittime,
            "dischtime": dischtime,
            "deathtime": deathtime,
            "admission_type": adm_type,
            "admit_provider_id": provider[rng.integers(0, provider.size, S)],
            "admission_location": adm_loc,
            "discharge_location": dis_loc,
            "insurance": insurance,
            "language": np.where(rng.random(S) < 0.9, "ENGLISH", "?").astype(object),
            "marital_status": marital_p[pat],
            "race": race_p[pat],
            "edregtime": edreg,
            "edouttime": edout,
            "hospital_expire_flag": died.astype(np.int64),
        },
        order=np.lexsort((hadm_id, subject_id)),
    )

    last_unit = np.where(rng.random(S) < 0.9, careunit, careunit[rng.permutation(S)]).astype(object)
    _write(
        icu / "icustays.csv.gz",
        {
            "subject_id": subject_id,
            "hadm_id": hadm_id,
            "stay_id": stay_id,
            "first_careunit": careunit,
            "last_careunit": last_unit,
            "intime": intime,
            "outtime": outtime,
            "los": np.round((outtime - intime) / DAY, 6),
        },
        order=np.lexsort((stay_id, subject_id)),
    )

    # ---------------- measurements, in chunks of whole patients -------------------------
    nF = len(FEATURES)
    beta_s = np.array([FEATURE_MODEL[f][3] for f in FEATURES])
    beta_d = np.array([FEATURE_MODEL[f][4] for f in FEATURES])
    noise = np.array([FEATURE_MODEL[f][5] for f in FEATURES])
    rho = np.sqrt(np.clip(1 - beta_s**2 - noise**2, 0.05, None))
    ctx = dict(
        sev=sev,
        det=det,
        base=rng.standard_normal((S, nF)) * rho,  # per-stay baselines
        beta_s=beta_s,
        beta_d=beta_d,
        noise=noise,
        intime=intime,
        horizon_s=np.minimum(outtime - intime, HORIZON_HOURS * HOUR),
        p_vital=rng.beta(30, 2.5, S),
        arterial=rng.random(S) < np.clip(0.25 + 0.15 * sev, 0.05, 0.9),
        vent=rng.random(S) < np.clip(0.30 + 0.12 * sev, 0.02, 0.95),
        p_urine=rng.beta(6, 3, S),
        age=age,
        male=gender[pat] == "M",
        caregiver=rng.integers(1, 100_000, S),
        subject_id=subject_id,
        hadm_id=hadm_id,
        stay_id=stay_id,
    )
    # chunk boundaries on patient boundaries (stays of a patient are consecutive)
    first_stay = np.concatenate([[0], np.cumsum(counts)])
    cuts = np.unique(
        np.concatenate([first_stay[np.searchsorted(first_stay, np.arange(0, S, CHUNK_STAYS))], [S]])
    )
    writers = {
        name: _GzCsv(root / name)
        for name in ("icu/chartevents.csv.gz", "hosp/labevents.csv.gz", "icu/outputevents.csv.gz")
    }
    try:
        counters = {"lab": 0, "draw": 0}
        for c, (lo, hi) in enumerate(zip(cuts[:-1], cuts[1:], strict=True)):
            crng = np.random.default_rng([seed, GENERATOR_VERSION, 1, c])
            _measurements(crng, np.arange(lo, hi), ctx, writers, counters)
    finally:
        for w in writers.values():
            w.close()

    # dictionaries
    _write_dict(
        hosp / "d_labitems.csv.gz",
        ["itemid", "label", "fluid", "category"],
        [r[:4] for r in D_LABITEMS],
    )
    _write_dict(
        icu / "d_items.csv.gz",
        [
            "itemid",
            "label",
            "abbreviation",
            "linksto",
            "category",
            "unitname",
            "param_type",
            "lownormalvalue",
            "highnormalvalue",
        ],
        D_ITEMS,
    )


def _write_dict(path: Path, header: list[str], rows: list[tuple]) -> None:
    import pandas as pd

    df = pd.DataFrame(sorted(rows, key=lambda r: r[0]), columns=header)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False, compression={"method": "gzip", "compresslevel": 1, "mtime": 0})


def _measurements(rng, stays, ctx, writers, counters) -> None:
    """Chartevents, labevents and outputevents rows of ``stays`` (whole patients), appended."""
    import pyarrow as pa

    g = ctx
    sev, det, base, intime, horizon_s = g["sev"], g["det"], g["base"], g["intime"], g["horizon_s"]
    beta_s, beta_d, noise = g["beta_s"], g["beta_d"], g["noise"]
    subject_id, hadm_id, stay_id = g["subject_id"], g["hadm_id"], g["stay_id"]
    caregiver, age = g["caregiver"], g["age"]
    n_all = sev.size

    def latent(f: str, st: np.ndarray, t: np.ndarray) -> np.ndarray:
        j = FIDX[f]
        return (
            beta_s[j] * sev[st]
            + beta_d[j] * det[st] * (t / (24 * HOUR))
            + base[st, j]
            + noise[j] * rng.standard_normal(st.size)
        )

    def hourly(p_stay: np.ndarray, p_double: float, on_hour: float):
        """Charting events about once an hour: (stay index, seconds since intime)."""
        n_h = np.ceil(horizon_s[stays] / HOUR).astype(np.int64) + 1
        st = np.repeat(stays, n_h)
        h = np.arange(st.size) - np.repeat(np.cumsum(n_h) - n_h, n_h)
        to_clock = (HOUR - intime % HOUR) % HOUR  # seconds from intime to the next clock hour
        keep = rng.random(st.size) < p_stay[st]
        st, h = st[keep], h[keep]
        # slot h covers hour bin h - 1 (slot 0 is dropped below): charted on the clock hour, or
        # at a random minute of that hour since intime
        on = rng.random(st.size) < on_hour
        t = np.where(
            on,
            to_clock[st] + (h - 1) * HOUR,
            (h - 1) * HOUR + rng.integers(0, HOUR // 60, st.size) * 60,
        )
        dbl = rng.random(st.size) < p_double
        st2, t2 = st[dbl], t[dbl] + rng.integers(5, 30, dbl.sum()) * 60
        st, t = np.concatenate([st, st2]), np.concatenate([t, t2])
        ok = (t >= 0) & (t <= horizon_s[st])
        return st[ok], t[ok]

    ce_parts: list[dict] = []  # chartevents pieces: stay, t, itemid, valuenum, text, uom

    def add_ce(st, t, itemid, valuenum, uom, text=None, decimals=0):
        itemid = np.broadcast_to(np.asarray(itemid, np.int64), st.shape)
        if text is None:
            valuenum, text = _fmt(valuenum, decimals)
        ce_parts.append(dict(st=st, t=t, itemid=itemid, valuenum=valuenum, text=text, uom=uom))

    # vitals: hr, blood pressure, resp, SpO2 charted together about hourly
    st, t = hourly(g["p_vital"], 0.10, 0.7)
    vals = {f: _transform(f, latent(f, st, t)) for f in ("hr", "sbp", "dbp", "resp", "o2sat")}
    vals["dbp"] = np.minimum(vals["dbp"], vals["sbp"] - 15)
    vals["map"] = (vals["sbp"] + 2 * vals["dbp"]) / 3 + rng.normal(0, 2.5, st.size)
    vals["o2sat"] = np.clip(vals["o2sat"], 60, 100)
    vals["resp"] = np.clip(vals["resp"], 4, 60)
    art = g["arterial"][st]
    items = {
        "hr": (220045, 220045, "bpm"),
        "sbp": (220050, 220179, "mmHg"),
        "dbp": (220051, 220180, "mmHg"),
        "map": (220052, 220181, "mmHg"),
        "resp": (220210, 220210, "insp/min"),
        "o2sat": (220277, 220277, "%"),
    }
    for f, (i_art, i_nbp, uom) in items.items():
        m = rng.random(st.size) > 0.03
        v = vals[f][m].copy()
        err = rng.random(v.size) < 0.001  # charting errors, out of any plausible range
        v[err] = {
            "hr": 999.0,
            "sbp": 999.0,
            "dbp": -5.0,
            "map": 999.0,
            "resp": 150.0,
            "o2sat": 0.0,
        }[f]
        add_ce(st[m], t[m], np.where(art[m], i_art, i_nbp), v, uom)
    rhythm = rng.random(st.size) < 0.25
    add_ce(
        st[rhythm],
        t[rhythm],
        220048,
        np.full(rhythm.sum(), np.nan),
        None,
        text=pa.array(
            np.where(
                rng.random(rhythm.sum()) < 0.8, "SR (Sinus Rhythm)", "AF (Atrial Fibrillation)"
            ).astype(object)
        ),
    )

    # temperature every few hours, mostly in Fahrenheit
    st, t = hourly(np.full(n_all, 0.30), 0.0, 0.6)
    temp_c = _transform("temp", latent("temp", st, t))
    fahr = rng.random(st.size) < 0.85
    err = rng.random(st.size) < 0.003  # a Fahrenheit value in the Celsius item: implausible
    add_ce(st[fahr], t[fahr], 223761, temp_c[fahr] * 1.8 + 32, "°F", decimals=1)
    c_val = np.where(err, temp_c * 1.8 + 32, temp_c)
    add_ce(st[~fahr], t[~fahr], 223762, c_val[~fahr], "°C", decimals=1)

    # FiO2 for ventilated stays
    vent = g["vent"]
    st, t = hourly(np.where(vent, 0.30, 0.0), 0.0, 0.5)
    fio2 = np.clip(_transform("fio2", latent("fio2", st, t)), 21, 100)
    add_ce(st, t, 223835, np.round(fio2 / 5) * 5, None)

    # weight and height around ICU admission
    a, n = age[stays], stays.size
    weight = np.where(a >= 18, np.clip(rng.normal(81, 22, n), 35, 220), np.clip(a * 3 + 8, 4, 90))
    height = np.where(
        a >= 18,
        np.clip(rng.normal(np.where(g["male"][stays], 176, 163), 8), 140, 205),
        np.clip(a * 6 + 75, 50, 190),
    )
    m = np.flatnonzero(rng.random(n) < 0.88)
    add_ce(stays[m], rng.integers(60, 3 * HOUR, m.size), 226512, weight[m], "kg", decimals=1)
    u = rng.random(n)
    m = np.flatnonzero(u < 0.42)
    add_ce(stays[m], rng.integers(60, 4 * HOUR, m.size), 226707, height[m] / 2.54, "Inch")
    m = np.flatnonzero((u >= 0.42) & (u < 0.52))
    add_ce(stays[m], rng.integers(60, 4 * HOUR, m.size), 226730, height[m], "cm")

    st = np.concatenate([p["st"] for p in ce_parts])
    t = np.concatenate([p["t"] for p in ce_parts])
    itemid = np.concatenate([p["itemid"] for p in ce_parts])
    valuenum = np.concatenate([p["valuenum"] for p in ce_parts])
    text = pa.concat_arrays([p["text"].cast(pa.string()) for p in ce_parts])
    uom = pa.concat_arrays(
        [
            pa.nulls(p["st"].size, pa.string())
            if p["uom"] is None
            else pa.array(np.full(p["st"].size, p["uom"], dtype=object), pa.string())
            for p in ce_parts
        ]
    )
    charttime = intime[st] + t
    writers["icu/chartevents.csv.gz"].write(
        {
            "subject_id": subject_id[st],
            "hadm_id": hadm_id[st],
            "stay_id": stay_id[st],
            "caregiver_id": caregiver[st],
            "charttime": charttime,
            "storetime": charttime + rng.integers(0, 40, st.size) * 60,
            "itemid": itemid,
            "value": text,
            "valuenum": valuenum,
            "valueuom": uom,
            "warning": np.zeros(st.size, np.int64),
        },
        order=np.lexsort((itemid, charttime, stay_id[st], subject_id[st])),
    )
    ce_parts.clear()

    # labs: panels drawn a few times a day from 12 h before ICU admission; sicker, more often
    lab_rows = []
    draw_id = counters["draw"]
    lab_info = {r[0]: r for r in D_LABITEMS}
    for panel, rate in PANEL_RATE.items():
        span = horizon_s / HOUR + 12
        r = (
            rate
            * np.exp(0.3 * sev[stays])
            * (np.where(vent[stays], 1.8, 0.6) if panel == "bg" else 1.0)
        )
        n = rng.poisson(r * span[stays])
        dst = np.repeat(stays, n)
        dt = ((rng.random(dst.size) * span[dst] - 12) * HOUR).astype(np.int64) // 60 * 60
        dt = dt - intime[dst] % 60  # charttime on the minute
        did = draw_id + np.arange(dst.size)
        draw_id += dst.size
        for itemid_, feat, p in PANELS[panel]:
            m = rng.random(dst.size) < p
            lst, lt = dst[m], dt[m]
            if feat is None:
                v = {50868: rng.normal(14, 3, lst.size), 51279: rng.normal(3.4, 0.6, lst.size)}[
                    itemid_
                ]
                dec = 1
            else:
                v = _transform(feat, latent(feat, lst, lt))
                dec = FEATURE_MODEL[feat][6]
            lab_rows.append((lst, lt, np.full(lst.size, itemid_), v, dec, did[m]))
    st = np.concatenate([r[0] for r in lab_rows])
    t = np.concatenate([r[1] for r in lab_rows])
    itemid = np.concatenate([r[2] for r in lab_rows])
    dec = np.concatenate([np.full(r[0].size, r[4]) for r in lab_rows])
    valuenum, text = _fmt(np.concatenate([r[3] for r in lab_rows]), dec)
    draw = np.concatenate([r[5] for r in lab_rows])
    specimen = 1_000_000 + 3 * draw + rng.integers(0, 3, draw.size)  # distinct per draw
    counters["draw"] = draw_id
    charttime = intime[st] + t
    uniq = np.unique(itemid)
    code = np.searchsorted(uniq, itemid)
    ref_l = np.array([np.nan if lab_info[i][5] is None else lab_info[i][5] for i in uniq])[code]
    ref_u = np.array([np.nan if lab_info[i][6] is None else lab_info[i][6] for i in uniq])[code]
    units = np.array([lab_info[i][4] or "" for i in uniq], dtype=object)[code]
    flag = np.where((valuenum < ref_l) | (valuenum > ref_u), "abnormal", "").astype(object)
    pre_icu = t < 0
    n_lab = st.size
    order_lab = np.lexsort((itemid, charttime, subject_id[st]))
    labevent_id = np.empty(n_lab, np.int64)
    labevent_id[order_lab] = counters["lab"] + np.arange(n_lab) + 1
    counters["lab"] += n_lab
    writers["hosp/labevents.csv.gz"].write(
        {
            "labevent_id": labevent_id,
            "subject_id": subject_id[st],
            "hadm_id": pa.array(hadm_id[st], mask=pre_icu & (rng.random(n_lab) < 0.3)),
            "specimen_id": specimen,
            "itemid": itemid,
            "order_provider_id": np.full(n_lab, "", dtype=object),
            "charttime": charttime,
            "storetime": charttime + rng.integers(20, 150, n_lab) * 60,
            "value": text,
            "valuenum": valuenum,
            "valueuom": units,
            "ref_range_lower": ref_l,
            "ref_range_upper": ref_u,
            "flag": flag,
            "priority": np.where(rng.random(n_lab) < 0.6, "STAT", "ROUTINE").astype(object),
            "comments": np.full(n_lab, "", dtype=object),
        },
        order=order_lab,
    )
    del lab_rows, st, t, itemid, valuenum, text, charttime

    # urine output most hours (summed per hour by the extractor), the odd chest tube
    st, t = hourly(g["p_urine"], 0.08, 0.8)
    vol = _transform("urine", latent("urine", st, t))
    item = np.where(rng.random(st.size) < 0.85, 226559, 226560)
    chest = rng.random(st.size) < 0.03
    item[chest] = 226588
    vol = np.clip(np.round(vol / 5) * 5, 0, 3000)
    vol[rng.random(st.size) < 0.0005] = 5000.0  # implausible single hour, dropped on extraction
    charttime = intime[st] + t
    writers["icu/outputevents.csv.gz"].write(
        {
            "subject_id": subject_id[st],
            "hadm_id": hadm_id[st],
            "stay_id": stay_id[st],
            "caregiver_id": caregiver[st],
            "charttime": charttime,
            "storetime": charttime + rng.integers(0, 40, st.size) * 60,
            "itemid": item,
            "value": vol,
            "valueuom": np.full(st.size, "ml", dtype=object),
        },
        order=np.lexsort((item, charttime, stay_id[st], subject_id[st])),
    )
