"""A synthetic ICU cohort that behaves like de-identified radiology notes, for tests, demo, benchmarks.

Real notes are protected data. :func:`generate_cohort` builds patients whose notes look like
MIMIC-style de-identified reports (``EXAMINATION / INDICATION / TECHNIQUE / COMPARISON / FINDINGS /
IMPRESSION`` sections, ``___`` blanks, lines hard-wrapped at 68-80 characters, ICU abbreviations,
occasional typos) and that mostly have nothing to do with ARDS (line and tube checks, abdominal
and renal ultrasound, CT abdomen, CT head, venous duplex, echo, procedure notes).

Labels follow the Berlin definition. A positive patient has a precipitating insult (pneumonia,
aspiration, sepsis, pancreatitis, trauma, transfusion, overdose), diffuse bilateral opacities
within a week of it that heart failure, effusion or collapse do not explain, is usually
intubated, and the opacities evolve over days. That evidence sits in a minority of the
patient's notes, anywhere in the timeline, and most positives never name "ARDS". How clear-cut
a positive's imaging is varies: the least clear read like fluid overload (mild cardiomegaly,
small effusions, "edema versus infection").

Negatives are ICU stays with normal lungs, lobar pneumonia, cardiogenic edema (cardiomegaly,
congestion, effusions, improving with diuresis), atelectasis, COPD, post-operative change,
nodules, chronic interstitial lung disease, a transient fluid-overload picture after
resuscitation (bilateral opacities that clear with diuresis), or bilateral opacities that
appear more than a week after the insult (outside the Berlin window); many share the insults
(sepsis, pancreatitis, trauma ...) and the bilateral-opacity words of positives, so that no
single phrase decides the label and a model must combine cues. At least 30% of negatives carry
an ARDS *trap*: "r/o ARDS" or "concerning for ARDS" in an indication whose findings don't
support it, a remote "h/o ARDS", or a negated / hedged mention.

Difficulty (``benchmarks/baselines.py``, BENCHMARKS.md): a keyword rule (any ARDS mention)
scores F1 well under 0.6; TF-IDF + logistic regression lands between 0.70 and 0.88.

Output (see :func:`generate_cohort`):

- **notes**, long format: ``patient_id, note_id, charttime, note_type, text, label``; ``label``
  is the string ``"true"`` or ``"false"`` (repeated on every note row of a patient);
  ``note_type`` is ``"Radiology"``, ``"Echo"`` or ``"Procedure"``; ``charttime`` is
  ``YYYY-MM-DD HH:MM:SS`` (MIMIC-style shifted years); rows are sorted by patient, then time.
- **evidence**: ``patient_id, note_id, kind``, one row per (note, kind). For patients generated
  as positive: ``onset_insult``, ``bilateral_opacities``, ``ventilation``, ``evolution``,
  ``cardiac_excluded``, ``ards_mention``. For negatives, trap notes: ``trap_rule_out``,
  ``trap_history``, ``trap_negated``, ``trap_hedged`` (the note names ARDS without supporting
  it) and ``trap_mimic`` (bilateral-opacity wording explained by something else). The retrieval
  benchmark should use the non-``trap_*`` rows of positive patients.

Label noise (``noise``) flips the ``label`` of exactly ``round(noise * n_patients)`` patients
chosen at random; the text and ``evidence`` still describe the generated condition, so a flipped
patient's evidence kinds tell what the text really supports.

Everything is deterministic for a seed: one ``random.Random`` per cohort and one per patient,
seeded from the cohort seed; no global random state and no ``hash()``.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from .errors import ConfigError

__all__ = [
    "EVIDENCE_COLUMNS",
    "NOTES_COLUMNS",
    "POSITIVE_EVIDENCE_KINDS",
    "TRAP_KINDS",
    "generate_cohort",
    "patient_scenarios",
    "write_cohort",
]

NOTES_COLUMNS = ["patient_id", "note_id", "charttime", "note_type", "text", "label"]
EVIDENCE_COLUMNS = ["patient_id", "note_id", "kind"]
POSITIVE_EVIDENCE_KINDS = (
    "onset_insult",
    "bilateral_opacities",
    "ventilation",
    "evolution",
    "cardiac_excluded",
    "ards_mention",
)
#: Trap kinds whose note names ARDS without supporting it (the issue's "traps").
ARDS_TRAP_KINDS = ("trap_rule_out", "trap_history", "trap_negated", "trap_hedged")
TRAP_KINDS = (*ARDS_TRAP_KINDS, "trap_mimic")

# Share of negatives that carry at least one ARDS-word trap (issue: at least 30%).
_TRAP_SHARE = 0.38
# Share of positives whose notes name ARDS (issue: most positives never do).
_POS_MENTION = 0.30

Rng = random.Random

# ---------------------------------------------------------------------------------------------
# small text helpers
# ---------------------------------------------------------------------------------------------


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:] if s else s


def _pick(r: Rng, options: Sequence[str]) -> str:
    return options[r.randrange(len(options))]


def _wpick(r: Rng, weighted: Sequence[tuple[str, float]]) -> str:
    total = sum(w for _, w in weighted)
    x = r.random() * total
    for value, w in weighted:
        x -= w
        if x <= 0:
            return value
    return weighted[-1][0]


def _sent(*parts: str) -> str:
    """Join non-empty parts into one sentence with a capital and a full stop."""
    s = " ".join(p for p in parts if p).strip()
    s = " ".join(s.split())
    s = s.replace(" ,", ",").replace(",.", ".")
    if not s:
        return ""
    if s[-1] not in ".?!":
        s += "."
    return _cap(s)


def _wrap(text: str, width: int) -> list[str]:
    """Greedy hard wrap of one paragraph (faster than textwrap, which is regex-based)."""
    lines: list[str] = []
    cur: list[str] = []
    n = 0
    for w in text.split():
        if cur and n + 1 + len(w) > width:
            lines.append(" ".join(cur))
            cur, n = [w], len(w)
        else:
            n += len(w) + (1 if cur else 0)
            cur.append(w)
    if cur:
        lines.append(" ".join(cur))
    return lines


# words of an ARDS mention stay intact, so that evidence and trap kinds stay true to the text
_TYPO_SKIP = frozenset({"ARDS", "ARDSnet", "___", "acute", "Acute", "respiratory", "Respiratory",
                        "distress", "Distress", "syndrome"})


def _typo(r: Rng, text: str) -> str:
    """Introduce one realistic typo (swap, drop or double a letter) in a word of 5+ letters."""
    words = text.split(" ")
    cands = [i for i, w in enumerate(words) if len(w) >= 5 and w.isalpha() and w not in _TYPO_SKIP]
    if not cands:
        return text
    i = cands[r.randrange(len(cands))]
    w = words[i]
    j = r.randrange(1, len(w) - 2)
    op = r.random()
    if op < 0.45:
        w = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
    elif op < 0.8:
        w = w[:j] + w[j + 1 :]
    else:
        w = w[:j] + w[j] + w[j:]
    words[i] = w
    return " ".join(words)


def _fmt_time(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S")


# ---------------------------------------------------------------------------------------------
# vocabulary: many phrasings per finding, composed from parts
# ---------------------------------------------------------------------------------------------

_EXTENT = ["diffuse", "extensive", "widespread", "patchy", "confluent", "multifocal", "dense",
           "hazy", "coalescent", "severe", "moderate", "heterogeneous"]
_BILAT = ["bilateral", "b/l", "bilateral perihilar and basilar", "bilateral mid and lower zone",
          "bilateral, right greater than left,", "bilateral, left greater than right,",
          "bilateral diffuse", "bilateral symmetric"]
_OPAC = ["airspace opacities", "air space opacities", "alveolar opacities", "airspace disease",
         "parenchymal opacities", "opacities", "consolidations", "infiltrates",
         "ground-glass opacities", "airspace consolidation", "alveolar infiltrates",
         "consolidative opacities", "opacification"]
_BOTH = ["in both lungs", "throughout both lungs", "involving all lobes", "in all lung zones",
         "involving both lungs", "in both the upper and lower lungs", "bilaterally"]
_ARDS_QUAL = [" with air bronchograms", " sparing the costophrenic angles",
              ", more confluent in the dependent lungs", " with relative sparing of the apices",
              ", with a peripheral predominance", " with scattered air bronchograms", "", "", ""]
_EDEMA_QUAL = [" with indistinct pulmonary vessels", " with peribronchial cuffing",
               " with Kerley B lines", " in a perihilar distribution", " with perihilar haziness",
               " with thickening of the fissures", "", ""]


def _bilateral_sentence(r: Rng, lean: str) -> str:
    """One sentence describing bilateral opacities; ``lean`` is 'ards' or 'edema' (qualifiers)."""
    ext, bil, opac, both = _pick(r, _EXTENT), _pick(r, _BILAT), _pick(r, _OPAC), _pick(r, _BOTH)
    qual = _pick(r, _ARDS_QUAL if lean == "ards" else _EDEMA_QUAL)
    if lean != "ards" and r.random() < 0.3:
        qual = _pick(r, _ARDS_QUAL)
    if lean == "ards" and r.random() < 0.2:
        qual = _pick(r, _EDEMA_QUAL)
    frame = r.randrange(7)
    if frame == 0:
        return _sent("there are", ext, bil, opac + qual)
    if frame == 1:
        return _sent(ext, bil, opac, _pick(r, ["are present", "are seen", "are noted", "are again seen"])
                     + qual)
    if frame == 2:
        return _sent("the lungs demonstrate", ext, opac, both + qual)
    if frame == 3:
        return _sent(_pick(r, ["opacities", "airspace opacities", "parenchymal opacities",
                                "ground-glass and consolidative opacities"]),
                     "are seen", both + ",", ext, "in character" + qual)
    if frame == 4:
        return _sent(_pick(r, ["both lungs are diffusely opacified",
                                "there is diffuse opacification of both lungs",
                                "there is near white-out of both lungs",
                                "there is extensive bilateral pulmonary opacification"]) + qual)
    if frame == 5:
        return _sent(ext, "opacities", both + qual)
    return _sent(_pick(r, ["there is", "there has been development of", "interval development of"]),
                 ext, bil, opac + qual)


def _heart_normal(r: Rng) -> str:
    return _pick(r, [
        "Heart size is normal.", "The cardiac silhouette is not enlarged.",
        "Cardiomediastinal silhouette is within normal limits.",
        "Cardiac and mediastinal contours are unremarkable.",
        "The heart is normal in size.", "Normal heart size.",
        "Heart size is top normal.", "The cardiomediastinal and hilar contours are stable.",
        "Cardiomediastinal contours are grossly unchanged.",
    ])


def _heart_big(r: Rng) -> str:
    return _pick(r, [
        "Moderate cardiomegaly is unchanged.", "The heart is enlarged.",
        "Moderate to severe enlargement of the cardiac silhouette.",
        "Cardiomegaly is again noted.", "Stable cardiomegaly.",
        "The cardiac silhouette remains enlarged.", "Mild cardiomegaly.",
        "Heart size is mildly enlarged, unchanged.",
    ])


def _congestion(r: Rng) -> str:
    return _pick(r, [
        "There is pulmonary vascular congestion.", "Pulmonary vascular engorgement is present.",
        "There is cephalization of the pulmonary vasculature.",
        "Mild interstitial edema with vascular congestion.",
        "Upper zone vascular redistribution is noted.",
        "Pulmonary vascular markings are indistinct, consistent with congestion.",
        "Moderate pulmonary edema.", "There is mild pulmonary edema.",
        "Interstitial markings are increased, consistent with interstitial edema.",
    ])


def _pleura_clear(r: Rng) -> str:
    return _pick(r, [
        "No pleural effusion or pneumothorax.", "There is no pleural effusion or PTX.",
        "No large pleural effusion. No pneumothorax.", "No PTX.",
        "There is no pneumothorax or sizable effusion.",
        "Costophrenic angles are sharp. No pneumothorax.",
        "No evidence of pneumothorax.", "No effusion or PTX.",
    ])


def _pleura_small(r: Rng) -> str:
    return _pick(r, [
        "Small bilateral pleural effusions.", "Possible small left pleural effusion.",
        "Trace bilateral effusions.", "Small right pleural effusion. No pneumothorax.",
        "Small layering effusions are possible.", "Blunting of the costophrenic angles may "
        "reflect small effusions.",
    ])


def _pleura_big(r: Rng) -> str:
    return _pick(r, [
        "Moderate bilateral pleural effusions, right greater than left.",
        "Moderate layering bilateral effusions with adjacent compressive atelectasis.",
        "Large left and moderate right pleural effusions.",
        "Bilateral pleural effusions have increased.",
    ])


def _cxr_extras(r: Rng) -> tuple[list[str], list[str]]:
    """Incidental sentences of a chest film: (before the lung findings, after them)."""
    pre, post = [], []
    if r.random() < 0.3:
        pre.append(_pick(r, [
            "Exam is limited by patient rotation and low lung volumes.",
            "Study is limited by overlying support devices and patient positioning.",
            "The patient is rotated to the right, limiting evaluation.",
            "Single portable view was obtained with the patient in semi-upright position.",
            "Assessment is limited by the supine technique.",
        ]))
    if r.random() < 0.4:
        pre.append(_pick(r, [
            "Interval removal of the left chest tube.", "Interval placement of a right IJ line.",
            "The support devices are unchanged in position.", "Interval removal of the NG tube.",
            "Compared to the prior study there has been interval placement of a feeding tube.",
            "EKG leads overlie the chest.", "A defibrillator pad projects over the left chest.",
            "Right-sided dual-chamber pacemaker leads terminate in the right atrium and ventricle.",
        ]))
    if r.random() < 0.7:
        post.append(_pick(r, [
            "The mediastinal and hilar contours are unremarkable.",
            "Mediastinal contours are stable. Atherosclerotic calcification of the aortic knob.",
            "Hilar contours are normal. The aorta is tortuous and calcified.",
            "Mediastinal and hilar contours are unchanged.",
            "The trachea is midline.",
        ]))
    if r.random() < 0.35:
        post.append(_pick(r, [
            "Visualized upper abdomen is notable for a nonspecific bowel gas pattern.",
            "Surgical clips in the right upper quadrant.",
            "Partially imaged upper abdomen is unremarkable.",
            "Overlying EKG leads and external pads obscure fine detail.",
            "Old healed right rib fractures.",
            "Severe degenerative changes of both shoulders.",
        ]))
    return pre, post


def _bones(r: Rng) -> str:
    return _pick(r, [
        "No acute osseous abnormality.", "Osseous structures are intact.",
        "Visualized osseous structures are unremarkable.", "No acute fracture is seen.",
        "Degenerative changes of the thoracic spine.", "", "",
    ])


# ---------------------------------------------------------------------------------------------
# patients
# ---------------------------------------------------------------------------------------------

_INSULTS: dict[str, dict[str, list[str]]] = {
    "pneumonia": {
        "hx": ["community acquired pneumonia", "RLL pneumonia", "influenza A pneumonia",
               "fever and productive cough", "LLL pneumonia, on ceftriaxone/azithromycin",
               "HCAP", "strep pneumoniae bacteremia", "MRSA pneumonia"],
    },
    "aspiration": {
        "hx": ["witnessed aspiration", "aspiration event during emesis",
               "aspiration after seizure", "found down with emesis, c/f aspiration",
               "aspiration during intubation", "EtOH intoxication with aspiration"],
    },
    "sepsis": {
        "hx": ["urosepsis", "septic shock", "cholangitis and septic shock",
               "sepsis from infected PICC", "E. coli bacteremia", "septic shock, on pressors",
               "necrotizing fasciitis s/p debridement", "perforated viscus and septic shock"],
    },
    "pancreatitis": {
        "hx": ["severe gallstone pancreatitis", "acute necrotizing pancreatitis",
               "EtOH pancreatitis", "hypertriglyceridemia-induced pancreatitis",
               "severe acute pancreatitis"],
    },
    "trauma": {
        "hx": ["MVC with multiple injuries", "fall from height, polytrauma",
               "pedestrian struck, multiple rib fractures", "motorcycle crash",
               "GSW to abdomen s/p ex-lap"],
    },
    "transfusion": {
        "hx": ["massive transfusion for UGIB", "postpartum hemorrhage s/p massive transfusion",
               "s/p ___ units PRBC for ruptured AAA", "hemorrhagic shock s/p MTP",
               "lower GI bleed requiring multiple transfusions"],
    },
    "overdose": {
        "hx": ["opioid overdose, found down", "polysubstance overdose",
               "heroin overdose with prolonged downtime", "TCA overdose"],
    },
}
_PMH = ["HTN", "DM2", "CAD", "CKD", "afib", "COPD", "CHF", "HFpEF", "ESRD on HD", "cirrhosis",
        "EtOH abuse", "obesity", "OSA", "prior CVA", "breast ca", "HLD", "hypothyroidism",
        "asthma", "PVD", "depression", "IVDU", "HIV", "s/p renal transplant", "ischemic CMP"]

# hx shared by positives (sepsis, pancreatitis, transfusion) and fluid-overloaded negatives
_RESUSC_HX = ["septic shock s/p aggressive fluid resuscitation", "urosepsis, +10L",
              "pancreatitis, s/p large volume resuscitation", "sepsis and AKI, anuric",
              "s/p massive transfusion", "hypotension, s/p ___L IVF"]

_INSULT_WEIGHTS = [("pneumonia", 0.3), ("sepsis", 0.22), ("aspiration", 0.15),
                   ("pancreatitis", 0.11), ("trauma", 0.1), ("transfusion", 0.07),
                   ("overdose", 0.05)]

_NEG_SCENARIOS = [("normal", 0.12), ("lobar_pneumonia", 0.14), ("cardiogenic_edema", 0.16),
                  ("atelectasis", 0.1), ("copd", 0.07), ("postop", 0.09), ("nodule", 0.06),
                  ("overload_mimic", 0.2), ("chronic_ild", 0.06), ("late_bilateral", 0.04)]

_NEG_HX = {
    "normal": ["GI bleed", "DKA", "upper GI bleed", "altered mental status", "alcohol withdrawal",
               "hyperkalemia", "stroke", "SAH", "hypotension", "syncope", "UTI and hypotension",
               "acute kidney injury", "cirrhosis with variceal bleed", "status epilepticus",
               "C. diff colitis", "hyponatremia", "small bowel obstruction"],
    "lobar_pneumonia": ["RLL pneumonia", "LLL pneumonia", "RUL pneumonia", "fever, cough",
                        "aspiration pneumonia", "sepsis from pneumonia", "HCAP", "lingular PNA"],
    "cardiogenic_edema": ["CHF exacerbation", "acute on chronic systolic CHF",
                          "HFrEF, EF ___%, volume overload", "NSTEMI and flash pulmonary edema",
                          "dyspnea, elevated BNP", "ischemic cardiomyopathy, SOB",
                          "severe AS and CHF", "hypertensive emergency with pulmonary edema"],
    "atelectasis": ["s/p ex-lap", "s/p hip fracture repair", "obesity hypoventilation",
                    "post-op hypoxia", "splinting from rib pain", "s/p laparoscopic chole"],
    "copd": ["COPD exacerbation", "severe COPD on home O2", "emphysema, SOB",
             "COPD, hypercarbic respiratory failure", "asthma/COPD overlap, wheezing"],
    "postop": ["s/p CABG", "s/p AVR", "s/p right upper lobectomy", "s/p esophagectomy",
               "s/p VATS wedge resection", "s/p Whipple", "s/p CABG x3", "s/p MVR"],
    "nodule": ["incidental lung nodule", "weight loss, smoker", "hemoptysis",
               "h/o lung cancer s/p resection", "chronic cough"],
    "late_bilateral": ["prolonged ICU stay", "critical illness"],
    "chronic_ild": ["IPF", "pulmonary fibrosis on home O2", "ILD, worsening dyspnea",
                    "scleroderma ILD", "chronic hypersensitivity pneumonitis"],
    "overload_mimic": ["septic shock s/p aggressive fluid resuscitation", "urosepsis, +10L",
                       "pancreatitis, s/p large volume resuscitation",
                       "ESRD missed HD, volume overload", "sepsis and AKI, anuric",
                       "s/p massive transfusion, volume overloaded", "hypotension, s/p ___L IVF"],
}


@dataclass
class _Patient:
    pid: str
    positive: bool
    sex: str  # "M" / "F"
    scenario: str
    insult: str
    admit: datetime
    n_notes: int
    times: list[float] = field(default_factory=list)  # days after admission, sorted
    intubated: tuple[float, float] | None = None  # (from, to) days
    trach_day: float | None = None
    picc_day: float | None = None
    cvl_day: float | None = None
    ngt: tuple[float, float] | None = None
    clarity: float = 1.0
    mention: bool = False
    trap_kinds: list[str] = field(default_factory=list)
    onset_day: float = 0.0
    hx: str = ""
    pmh: str = ""

    def on_vent(self, day: float) -> bool:
        return self.intubated is not None and self.intubated[0] <= day < self.intubated[1]

    @property
    def looks_positive(self) -> bool:
        """Imaging written like a positive's: positives and late (non-Berlin) bilateral cases."""
        return self.positive or self.scenario == "late_bilateral"

    def man(self) -> str:
        return "man" if self.sex == "M" else "woman"


@dataclass
class _Note:
    day: float
    note_type: str
    sections: list[tuple[str, str]]  # (HEADER, body paragraphs joined by "\n\n")
    kinds: list[str]


# ---------------------------------------------------------------------------------------------
# indication lines
# ---------------------------------------------------------------------------------------------


def _indication(r: Rng, p: _Patient, day: float, question: str, extra: str = "") -> str:
    age = "___" if r.random() < 0.8 else str(r.randint(24, 88))
    who = _pick(r, [f"{age} year old {p.man()}", f"{age} year old {p.man()}",
                    f"{age}-year-old {p.man()}", f"{age} y/o {p.sex}", f"{age}{p.sex}"])
    status = ""
    if p.on_vent(day) and r.random() < 0.6:
        status = _pick(r, ["intubated", "on vent", "intubated and sedated", "vented", "s/p intubation"])
    hx = p.hx if r.random() < 0.85 else _pick(r, ["___", "critical illness", "ICU stay"])
    if p.pmh and r.random() < 0.6:
        hx = _pick(r, [f"h/o {p.pmh}, now with {hx}", f"PMH {p.pmh}, p/w {hx}",
                       f"{p.pmh}, admitted with {hx}", f"{hx}, h/o {p.pmh}"])
    pieces = [f"{who} with {hx}"]
    if extra:
        pieces.append(extra)
    elif status:
        pieces.append(status)
    body = ", ".join(pieces)
    sep = _pick(r, ["  // ", " // ", ". ", " -- ", "  REASON FOR THIS EXAMINATION: "])
    return body + sep + question


_Q_LINE = ["eval ETT placement", "ETT position?", "interval change?", "eval for interval change",
           "NGT placement", "OGT placement", "assess tube position", "PICC placement",
           "eval for PTX", "s/p line placement, r/o PTX", "eval", "daily ICU film",
           "assess lines and tubes", "eval for edema", "eval for pneumonia", "fever",
           "hypoxia", "increased O2 requirement", "please eval for infiltrate", "dobhoff placement"]


# ---------------------------------------------------------------------------------------------
# note bodies
# ---------------------------------------------------------------------------------------------


def _devices(r: Rng, p: _Patient, day: float) -> list[str]:
    out: list[str] = []
    if p.on_vent(day):
        if p.trach_day is not None and day >= p.trach_day:
            out.append(_pick(r, ["Tracheostomy tube in standard position.",
                                 "Tracheostomy tube is in place.", "Trach tube in midline."]))
        else:
            cm = f"{r.randint(2, 7)}{_pick(r, ['', '.5'])}"
            out.append(_pick(r, [
                f"ETT terminates {cm} cm above the carina.",
                f"Endotracheal tube tip is {cm} cm from the carina.",
                "ET tube in standard position.",
                f"The endotracheal tube is in appropriate position, {cm} cm above the carina.",
                f"ETT tip at the level of the clavicles, approximately {cm} cm above the carina.",
            ]))
    if p.ngt is not None and p.ngt[0] <= day < p.ngt[1]:
        out.append(_pick(r, [
            "NGT courses below the diaphragm with the tip in the stomach.",
            "Enteric tube tip is in the stomach, side port near the GE junction.",
            "OG tube terminates in the stomach.", "The NG tube tip is out of view below the diaphragm.",
            "Feeding tube with tip in the proximal duodenum.",
            "Orogastric tube courses into the stomach and out of view.",
        ]))
    if p.picc_day is not None and day >= p.picc_day:
        out.append(_pick(r, [
            "Right PICC line tip in the mid SVC.", "Left PICC tip at the cavoatrial junction.",
            "Right-sided PICC terminates in the lower SVC.", "PICC tip in the low SVC.",
        ]))
    if p.cvl_day is not None and day >= p.cvl_day and (p.picc_day is None or day < p.picc_day):
        out.append(_pick(r, [
            "Right IJ central venous catheter tip in the mid SVC.",
            "Left IJ CVL terminates at the junction of the brachiocephalic vein and SVC.",
            "Right subclavian line tip projects over the cavoatrial junction.",
        ]))
    r.shuffle(out)
    return out


def _brief_lungs(r: Rng, p: _Patient, day: float) -> list[str]:
    """Non-specific parenchymal statement of a line/tube check (shared by all classes)."""
    if p.looks_positive and day >= p.onset_day - 0.3:
        clear_ok = False
    else:
        clear_ok = p.scenario in {"normal", "nodule", "postop"} or day < p.onset_day - 0.3
    opts = [
        "Lungs are grossly unchanged from prior.", "No significant interval change in the lungs.",
        "Cardiopulmonary findings are unchanged.", "Otherwise, no significant interval change.",
        "Appearance of the lungs is stable.", "Remainder of the exam is unchanged.",
        "No new focal consolidation.", "Lung volumes are low.",
        "Lung findings are similar to the prior study.",
    ]
    if clear_ok:
        opts += ["Lungs are clear.", "The lungs are clear without focal consolidation.",
                 "No focal consolidation, effusion or pneumothorax."]
    out = [_pick(r, opts)]
    if r.random() < 0.4:
        out[0] = _pick(r, ["Compared to ___, ", "Compared to the prior study, ", "Since ___, ",
                           "As compared to ___, "]) + out[0][:1].lower() + out[0][1:]
    if r.random() < 0.5:
        out.append(_pleura_clear(r) if r.random() < 0.7 else "No pneumothorax.")
    return out


def _cxr_exam(r: Rng, ventilated: bool) -> tuple[str, str]:
    # PA and lateral views need a patient who can stand: never while intubated
    exam = _wpick(r, [("CHEST (PORTABLE AP)", 0.75), ("CHEST (PA AND LAT)", 0.0 if ventilated
                                                                             else 0.1),
                      ("CHEST PORT. LINE PLACEMENT", 0.15)])
    if "PA AND LAT" in exam:
        return exam, _pick(r, ["Chest PA and lateral.", "PA and lateral views of the chest."])
    return exam, _pick(r, [
        "Portable AP chest radiograph.", "Chest AP portable.", "Portable supine AP view of the chest.",
        "Single frontal view of the chest.", "AP portable upright view of the chest.",
    ])


def _comparison(r: Rng, first: bool) -> str:
    if first:
        return _pick(r, ["None.", "None available.", "___", "Chest radiograph from ___."])
    return _pick(r, ["___", "Chest radiograph from ___.", "Prior study from ___ at ___.",
                     "Multiple prior chest radiographs, most recently ___.", "___ and ___."])


def _radiology(exam: str, indication: str, technique: str, comparison: str,
               findings: list[str], impression: list[str], r: Rng, extra: str = "") -> list[tuple[str, str]]:
    secs = []
    if r.random() < 0.85:
        cut = indication.replace("  REASON FOR THIS EXAMINATION: ", " // ").replace(" -- ", " // ")
        cond, _, reason = cut.partition(" // ")
        if not reason:
            cond, _, reason = cut.rpartition(". ")
        secs.append(("__PRE__", (
            f"{exam:<60} Clip # ___\nReason: {reason or cond}\n"
            f"{'_' * 78}\n___ MEDICAL CONDITION:\n  {cond.strip()}\n"
            f"REASON FOR THIS EXAMINATION:\n  {(reason or '___').strip()}\n{'_' * 78}\n"
            f"{'':>33}FINAL REPORT")))
    secs += [("EXAMINATION", exam), ("INDICATION", indication)]
    if technique:
        secs.append(("TECHNIQUE", technique))
    if extra:
        secs.append(("DOSE", extra))
    secs.append(("COMPARISON", comparison))
    secs.append(("FINDINGS", "\n\n".join(f for f in findings if f)))
    if len(impression) > 1 and r.random() < 0.6:
        imp = "\n".join(f"{i}. {s}" for i, s in enumerate(impression, 1))
    else:
        imp = " ".join(impression)
    secs.append(("IMPRESSION", imp))
    if r.random() < 0.1:
        secs.append(("RECOMMENDATION(S)", _pick(r, [
            "Clinical correlation and follow-up imaging as clinically indicated.",
            "Follow-up radiograph after repositioning of the tube is recommended.",
            "Consider CT for further evaluation if clinically warranted."])))
    if r.random() < 0.12:
        secs.append(("NOTIFICATION", _pick(r, [
            "The findings were discussed with ___, M.D. by ___, M.D. on the telephone on ___ at "
            "___, ___ minutes after discovery of the findings.",
            "Findings were communicated to the ICU team (Dr. ___) at ___ on ___.",
        ])))
    return secs


def _cxr_line_check(r: Rng, p: _Patient, day: float, first: bool) -> _Note:
    exam, tech = _cxr_exam(r, p.on_vent(day))
    q = _pick(r, _Q_LINE)
    dev = _devices(r, p, day)
    f1 = " ".join(dev) if dev else _pick(r, ["No lines or tubes.", "Lines and tubes removed.", ""])
    pre, post = _cxr_extras(r)
    f2 = " ".join([*pre, *_brief_lungs(r, p, day), _heart_normal(r) if p.scenario !=
                   "cardiogenic_edema" else _heart_big(r), *post])
    imp = []
    if dev:
        imp.append(_pick(r, ["Lines and tubes as above.", "Support devices in appropriate position.",
                             "Tubes and lines in standard position.", "Appropriately positioned "
                             "support devices.", "Lines and tubes are unchanged in position."]))
    imp.append(_pick(r, ["No significant interval change.", "No acute cardiopulmonary process.",
                         "Stable examination.", "No pneumothorax.", "No new abnormality."]))
    return _Note(day, "Radiology", _radiology(exam, _indication(r, p, day, q), tech,
                                              _comparison(r, first), [f1, f2], imp, r), [])


# --- CT / US / other imaging, mostly unrelated to the lungs -----------------------------------

_ORGANS_NORMAL = {
    "HEPATOBILIARY": ["The liver demonstrates homogenous attenuation throughout. There is no "
                      "evidence of focal lesions. There is no evidence of intrahepatic or "
                      "extrahepatic biliary dilatation. The gallbladder is within normal limits.",
                      "Mild hepatic steatosis. No focal liver lesion. The gallbladder is "
                      "unremarkable. No biliary dilation.",
                      "The liver is nodular in contour consistent with cirrhosis. No focal lesion. "
                      "Cholelithiasis without evidence of cholecystitis."],
    "PANCREAS": ["The pancreas has normal attenuation throughout, without evidence of focal "
                 "lesions or pancreatic ductal dilatation. There is no peripancreatic stranding.",
                 "The pancreas is atrophic. No ductal dilation or peripancreatic fluid."],
    "SPLEEN": ["The spleen shows normal size and attenuation throughout, without evidence of "
               "focal lesions.", "Spleen is normal in size. Small splenule noted."],
    "ADRENALS": ["The bilateral adrenal glands are normal in size and shape.",
                 "Left adrenal nodule measuring ___ cm, likely an adenoma."],
    "URINARY": ["The kidneys are of normal and symmetric size with normal nephrogram. There is no "
                "evidence of focal renal lesions within the limitations of this study. There is "
                "no hydronephrosis. There is no perinephric abnormality.",
                "Bilateral simple renal cysts. No hydronephrosis or stones. The bladder is "
                "decompressed around a Foley catheter."],
    "GASTROINTESTINAL": ["The stomach is unremarkable. Small bowel loops demonstrate normal "
                         "caliber, wall thickness, and enhancement throughout. The colon and "
                         "rectum are within normal limits. The appendix is normal.",
                         "Sigmoid diverticulosis without diverticulitis. No bowel obstruction. "
                         "Normal appendix."],
    "PELVIS": ["The urinary bladder and distal ureters are unremarkable. There is no free fluid "
               "in the pelvis.", "Small amount of free fluid in the pelvis."],
    "LYMPH NODES": ["There is no retroperitoneal or mesenteric lymphadenopathy. There is no "
                    "pelvic or inguinal lymphadenopathy."],
    "VASCULAR": ["There is no abdominal aortic aneurysm. Mild atherosclerotic disease is noted.",
                 "Moderate calcified atherosclerosis of the abdominal aorta without aneurysm."],
    "BONES": ["There is no evidence of worrisome osseous lesions or acute fracture. "
              "Degenerative changes of the lumbar spine.",
              "No acute fracture. Multilevel degenerative disc disease."],
    "SOFT TISSUES": ["The abdominal and pelvic wall is within normal limits.",
                     "Diffuse subcutaneous edema (anasarca).",
                     "Small fat-containing umbilical hernia."],
}

_ORGANS_NORMAL["REPRODUCTIVE ORGANS"] = [
    "The prostate and seminal vesicles are within normal limits.",
    "The uterus and bilateral adnexa are unremarkable.",
    "The prostate is enlarged, measuring up to ___ cm. The seminal vesicles are unremarkable.",
    "Fibroid uterus. No adnexal mass.",
]
_ORGAN_EXTRA = {
    "HEPATOBILIARY": ["A subcentimeter hypodensity in segment ___ is too small to characterize, "
                      "likely a cyst.", "The portal and hepatic veins are patent.",
                      "There is periportal edema, likely related to volume status.",
                      "No perihepatic fluid."],
    "SPLEEN": ["No perisplenic fluid.", "Calcified granulomas in the spleen."],
    "URINARY": ["A Foley catheter is present in a decompressed bladder.",
                "Punctate nonobstructing stone in the lower pole of the left kidney.",
                "Symmetric excretion of contrast into the collecting systems."],
    "GASTROINTESTINAL": ["An enteric tube terminates in the stomach.",
                         "Mild diffuse bowel wall edema, likely third spacing.",
                         "Colonic diverticulosis without evidence of diverticulitis.",
                         "There is no free air or pneumatosis."],
    "PELVIS": ["Rectal tube in place.", "No pelvic fluid collection."],
    "VASCULAR": ["The main portal vein, splenic vein, and SMV are patent.",
                 "A right femoral central venous catheter terminates in the IVC."],
    "SOFT TISSUES": ["Subcutaneous injection granulomas in the anterior abdominal wall.",
                     "Mild body wall edema.", "Small bilateral fat-containing inguinal hernias."],
    "BONES": ["Stable sclerotic focus in the left iliac bone, likely a bone island.",
              "Mild compression deformity of L1, unchanged."],
}

_PANCREATITIS_CT = [
    "The pancreas is edematous with extensive peripancreatic fat stranding and fluid tracking "
    "along the bilateral paracolic gutters. Approximately ___% of the pancreatic body and tail "
    "does not enhance, consistent with necrosis.",
    "Diffuse enlargement of the pancreas with surrounding inflammatory stranding and acute "
    "peripancreatic fluid collections, compatible with acute interstitial edematous pancreatitis.",
    "Heterogeneous enhancement of the pancreatic head and body with peripancreatic fluid, "
    "consistent with severe acute pancreatitis. No pseudocyst yet.",
]
_SEPSIS_CT = [
    ("URINARY", "The right kidney is enlarged with striated nephrogram and perinephric stranding. "
     "A ___ mm obstructing stone at the right UVJ with moderate hydroureteronephrosis."),
    ("HEPATOBILIARY", "The gallbladder is distended with wall thickening and pericholecystic "
     "fluid. The CBD is dilated to ___ mm with an obstructing distal stone, concerning for "
     "cholangitis."),
    ("GASTROINTESTINAL", "Free intraperitoneal air and fluid, with a focal defect of the "
     "sigmoid colon wall, consistent with perforation."),
    ("SOFT TISSUES", "Extensive soft tissue gas and fluid tracking along the fascial planes of "
     "the left thigh and perineum, concerning for necrotizing infection."),
]


def _lower_chest(r: Rng, p: _Patient, day: float, evidence_ards: bool) -> str:
    if evidence_ards:
        return _pick(r, [
            "Dependent consolidation and ground-glass opacities in the visualized lung bases "
            "bilaterally, new since ___.",
            "Extensive bilateral airspace consolidation with air bronchograms in the lung bases.",
            "Bilateral lower lobe consolidation and diffuse ground-glass opacity in the "
            "imaged lungs.",
        ])
    opts = ["Visualized lung fields are within normal limits. There is no evidence of pleural or "
            "pericardial effusion.", "Minimal bibasilar atelectasis. No pleural effusion.",
            "Small bilateral pleural effusions with adjacent atelectasis.",
            "The lung bases are clear. Heart size is normal."]
    if p.scenario == "cardiogenic_edema":
        opts = ["Cardiomegaly. Small bilateral pleural effusions and mild interlobular septal "
                "thickening.", "Moderate bilateral pleural effusions with compressive atelectasis."]
    return _pick(r, opts)


def _ct_abd(r: Rng, p: _Patient, day: float, first: bool, special: str = "",
            ards_bases: bool = False) -> _Note:
    exam = _pick(r, ["CT ABD AND PELVIS WITH CONTRAST", "CT ABD & PELVIS W/O CONTRAST",
                     "CT ABDOMEN AND PELVIS WITH IV CONTRAST", "CTA ABD AND PELVIS"])
    q = _pick(r, ["eval for abscess", "abd pain", "r/o intra-abdominal source of infection",
                  "eval for bowel perforation", "r/o RP bleed", "eval for collection",
                  "distension, eval for obstruction", "rising lactate"])
    tech = ("Multidetector CT images of the abdomen and pelvis were acquired "
            + ("after the administration of intravenous contrast. " if "W/O" not in exam else
               "without intravenous contrast. ")
            + "Reformatted coronal and sagittal images were generated and reviewed.")
    dose = "Total DLP (Body) = ___ mGy-cm." if r.random() < 0.7 else ""
    findings = [f"LOWER CHEST: {_lower_chest(r, p, day, ards_bases)}", "ABDOMEN:"]
    organs = {}
    for k, v in _ORGANS_NORMAL.items():
        organs[k] = _pick(r, v)
        if k in _ORGAN_EXTRA and r.random() < 0.7:
            organs[k] += " " + _pick(r, _ORGAN_EXTRA[k])
    impression = []
    if special == "pancreatitis":
        organs["PANCREAS"] = _pick(r, _PANCREATITIS_CT)
        impression.append(_pick(r, ["Severe acute pancreatitis with partial necrosis.",
                                    "Findings compatible with acute pancreatitis, no drainable "
                                    "collection.", "Acute necrotizing pancreatitis."]))
    elif special == "sepsis":
        key, txt = _pick(r, _SEPSIS_CT)  # type: ignore[misc]
        organs[key] = txt
        impression.append(_sent(txt.split(".")[0]))
    elif special == "trauma":
        organs["BONES"] = ("Acute fractures of the right ___-___ ribs and a minimally displaced "
                           "right superior pubic ramus fracture.")
        organs["SPLEEN"] = "Grade ___ splenic laceration with small perisplenic hematoma."
        impression.append("Multiple acute right rib fractures, splenic laceration and pelvic "
                          "fracture as detailed above.")
    for k, v in organs.items():
        findings.append(f"{k}: {v}")
    if ards_bases:
        impression.append("Extensive bilateral consolidation in the imaged lung bases.")
    if not impression:
        impression.append(_pick(r, ["No acute intra-abdominal process.",
                                    "No abscess or drainable fluid collection.",
                                    "No CT evidence of bowel perforation or obstruction.",
                                    "No acute abnormality in the abdomen or pelvis to explain "
                                    "the patient's symptoms."]))
        if r.random() < 0.4:
            impression.append(_pick(r, ["Cholelithiasis.", "Hepatic steatosis.",
                                        "Anasarca.", "Small bilateral pleural effusions."]))
    return _Note(day, "Radiology", _radiology(exam, _indication(r, p, day, q), tech,
                                              _comparison(r, first), findings, impression, r, dose), [])


def _us_abd(r: Rng, p: _Patient, day: float, first: bool) -> _Note:
    kind = r.randrange(3)
    if kind == 0:
        exam = _pick(r, ["LIVER OR GALLBLADDER US (SINGLE ORGAN)", "US ABD LIMIT, SINGLE ORGAN",
                         "RUQ ULTRASOUND"])
        q = _pick(r, ["elevated LFTs", "r/o cholecystitis", "transaminitis", "RUQ pain, fever"])
        tech = "Grey scale and color Doppler ultrasound images of the abdomen were obtained."
        findings = [
            "LIVER: " + _pick(r, ["The hepatic parenchyma appears within normal limits. The contour "
                                  "of the liver is smooth. There is no focal liver mass.",
                                  "The liver is diffusely echogenic, consistent with steatosis. No "
                                  "focal lesion."]) + " Main portal vein is patent with hepatopetal flow.",
            "BILE DUCTS: There is no intrahepatic biliary dilation. The CHD measures ___ mm.",
            "GALLBLADDER: " + _pick(r, ["There is no evidence of stones or gallbladder wall "
                                        "thickening.", "Sludge within the gallbladder without wall "
                                        "thickening or pericholecystic fluid.",
                                        "Cholelithiasis without sonographic evidence of acute "
                                        "cholecystitis. Sonographic Murphy sign negative."]),
            "PANCREAS: Imaged portion of the pancreas appears within normal limits, "
            "though the tail is obscured by bowel gas.",
            "SPLEEN: Normal echogenicity, measuring ___ cm.",
            "KIDNEYS: Limited views of the kidneys are unremarkable.",
            "RETROPERITONEUM: Visualized portions of aorta and IVC are within normal limits.",
        ]
        impression = [_pick(r, ["No acute findings. No evidence of acute cholecystitis.",
                                "Hepatic steatosis. Otherwise normal abdominal ultrasound.",
                                "Gallbladder sludge without evidence of cholecystitis."])]
    elif kind == 1:
        exam = _pick(r, ["RENAL U.S.", "RENAL ULTRASOUND", "US RENAL BILATERAL"])
        q = _pick(r, ["AKI", "rising creatinine, r/o obstruction", "oliguria", "AKI on CKD"])
        tech = "Grey scale and color Doppler ultrasound images of the kidneys were obtained."
        findings = [
            f"The right kidney measures {r.randint(95, 125)} mm. The left kidney measures "
            f"{r.randint(95, 125)} mm. " + _pick(r, [
                "There is no hydronephrosis, stones, or masses bilaterally.",
                "Mildly increased cortical echogenicity bilaterally, consistent with medical renal "
                "disease. No hydronephrosis.",
                "Simple cyst in the upper pole of the left kidney. No hydronephrosis."]),
            "Normal cortical thickness and corticomedullary differentiation are seen bilaterally.",
            "The bladder is " + _pick(r, ["decompressed with a Foley catheter in place.",
                                          "moderately well distended and normal in appearance."]),
        ]
        impression = [_pick(r, ["No hydronephrosis.", "Echogenic kidneys consistent with medical "
                                "renal disease. No hydronephrosis.", "Normal renal ultrasound."])]
    else:
        exam = _pick(r, ["UNILAT LOWER EXT VEINS", "BILAT LOWER EXT VEINS", "UNILAT UP EXT VEINS US"])
        q = _pick(r, ["leg swelling, r/o DVT", "r/o DVT", "arm swelling near PICC, eval for DVT"])
        tech = "Grey scale, color, and spectral Doppler evaluation was performed on the veins."
        findings = [
            "There is normal compressibility, flow, and augmentation of the common femoral, "
            "femoral, and popliteal veins. Normal color flow and compressibility are "
            "demonstrated in the posterior tibial and peroneal veins.",
            "There is normal respiratory variation in the common femoral veins bilaterally.",
        ]
        impression = [_pick(r, ["No evidence of deep venous thrombosis.",
                                "Nonocclusive thrombus in the right basilic vein near the PICC. "
                                "No deep venous thrombosis.", "No DVT in the examined veins."])]
    return _Note(day, "Radiology", _radiology(exam, _indication(r, p, day, q), tech,
                                              _comparison(r, first), findings, impression, r), [])


def _ct_head(r: Rng, p: _Patient, day: float, first: bool) -> _Note:
    exam = _pick(r, ["CT HEAD W/O CONTRAST", "CT HEAD WITHOUT CONTRAST"])
    q = _pick(r, ["AMS", "unresponsive off sedation", "fall, on anticoagulation",
                  "new left sided weakness", "eval for bleed", "seizure"])
    tech = ("Contiguous axial images of the brain were obtained without contrast. Coronal and "
            "sagittal reformations as well as bone algorithm reconstructions were provided.")
    findings = [
        _pick(r, ["There is no evidence of hemorrhage, edema, mass effect, or infarction.",
                  "There is no evidence of acute large territorial infarction, hemorrhage, edema, "
                  "or mass."]) + " " + _pick(r, [
                      "The ventricles and sulci are normal in size and configuration.",
                      "Prominence of the ventricles and sulci is consistent with age-related "
                      "involutional change.",
                      "Periventricular white matter hypodensities are nonspecific but likely "
                      "reflect sequelae of chronic small vessel ischemic disease."]),
        _pick(r, ["The basal cisterns are patent and there is preservation of gray-white "
                  "matter differentiation.", "Gray-white matter differentiation is preserved. "
                  "There is no midline shift.", "No extra-axial collection is identified. The "
                  "basal cisterns are patent."]) + " " + _pick(r, [
                      "Atherosclerotic calcifications of the cavernous carotid and vertebral "
                      "arteries are noted.", "Prior lacunar infarct in the left basal ganglia.",
                      "There is no hydrocephalus.", ""]),
        "There is no evidence of fracture. The visualized portion of the paranasal sinuses, "
        "mastoid air cells, and middle ear cavities are clear. " + _pick(r, [
            "Fluid in the nasopharynx, likely related to intubation.",
            "The visualized portion of the orbits are unremarkable.", ""]),
    ]
    impression = [_pick(r, ["No acute intracranial abnormality.",
                            "No acute intracranial process. Chronic small vessel disease.",
                            "No intracranial hemorrhage."])]
    if r.random() < 0.5:
        impression.append(_pick(r, [
            "MRI is more sensitive for the detection of acute infarction if clinically indicated.",
            "Mucosal thickening of the maxillary sinuses, likely related to intubation.",
            "Age-appropriate involutional changes."]))
    return _Note(day, "Radiology", _radiology(exam, _indication(r, p, day, q), tech,
                                              _comparison(r, first), findings, impression, r,
                                              "DLP: ___ mGy-cm." if r.random() < 0.5 else ""), [])


def _abd_film(r: Rng, p: _Patient, day: float, first: bool) -> _Note:
    exam = _pick(r, ["ABDOMEN (SUPINE ONLY)", "ABDOMEN PORTABLE", "SINGLE FRONTAL VIEW ABDOMEN"])
    q = _pick(r, ["dobhoff placement", "feeding tube placement", "OGT position", "distension"])
    findings = [
        _pick(r, ["Feeding tube with tip in the ___ portion of the duodenum.",
                  "The enteric tube terminates in the gastric body.",
                  "Post pyloric feeding tube tip in the fourth portion of the duodenum."]),
        _pick(r, ["Nonobstructive bowel gas pattern.", "Gas is seen throughout the colon and "
                  "rectum. No dilated small bowel loops.", "Mildly dilated loops of small bowel, "
                  "likely ileus."]) + " No free air on this supine study, which is limited for "
        "its detection.",
    ]
    impression = [_pick(r, ["Feeding tube in appropriate position.", "Enteric tube in stomach.",
                            "Nonobstructive bowel gas pattern."])]
    return _Note(day, "Radiology", _radiology(exam, _indication(r, p, day, q), "Supine AP view "
                                              "of the abdomen.", _comparison(r, first),
                                              findings, impression, r), [])


def _echo(r: Rng, p: _Patient, day: float, low_ef: bool) -> _Note:
    ind = _pick(r, ["Hypotension. Evaluate LV function.", "Sepsis. Left ventricular function.",
                    "Shortness of breath. CHF.", "Hypoxia. Assess biventricular function.",
                    "Pericardial effusion?", "Tachycardia. LV function."])
    tech = _pick(r, ["Suboptimal", "Adequate", "Suboptimal - ventilated patient",
                     "Good"]) if not p.on_vent(day) else "Suboptimal - ventilated patient"
    if low_ef:
        ef = _pick(r, ["20-25%", "25%", "30%", "<20%", "30-35%", "35%"])
        lv = (f"Moderate to severe global left ventricular hypokinesis. LVEF = {ef}. "
              "Dilated left ventricular cavity.")
        concl = (f"The left ventricular cavity is dilated with severe global hypokinesis (LVEF = "
                 f"{ef}). Right ventricular systolic function is borderline. There is moderate "
                 "functional mitral regurgitation. The estimated pulmonary artery systolic "
                 "pressure is elevated. The left atrium is elongated.")
        imp = "Severe global left ventricular systolic dysfunction. Moderate mitral regurgitation."
    else:
        ef = _pick(r, [">55%", "60%", "60-65%", ">65%", "55-60%"])
        lv = (f"Normal LV wall thickness, cavity size and regional/global systolic function "
              f"(LVEF {ef}).")
        concl = (f"The left atrium is normal in size. Left ventricular wall thickness, cavity "
                 f"size and regional/global systolic function are normal (LVEF {ef}). "
                 + _pick(r, ["Right ventricular chamber size and free wall motion are normal.",
                             "The right ventricular cavity is mildly dilated with borderline "
                             "normal free wall function.", "RV function is hyperdynamic."])
                 + " The aortic valve leaflets (3) appear structurally normal. "
                 "There is no pericardial effusion.")
        imp = _pick(r, ["Normal biventricular systolic function. No significant valvular disease.",
                        "Preserved left ventricular systolic function. No pericardial effusion.",
                        "Hyperdynamic LV. No significant valvular disease."])
    meas = "\n".join(
        f"{name}: {val} {unit} (nl {nl})" for name, val, unit, nl in [
            ("Left Atrium - Long Axis Dimension", f"{r.uniform(2.8, 4.6):.1f}", "cm", "<= 4.0 cm"),
            ("Left Ventricle - Septal Wall Thickness", f"{r.uniform(0.8, 1.4):.1f}", "cm",
             "0.6 - 1.1 cm"),
            ("Left Ventricle - Inferolateral Thickness", f"{r.uniform(0.8, 1.3):.1f}", "cm",
             "0.6 - 1.1 cm"),
            ("Left Ventricle - Diastolic Dimension", f"{r.uniform(3.8, 6.4):.1f}", "cm", "<= 5.6 cm"),
            ("Right Ventricle - Diastolic Dimension", f"{r.uniform(2.4, 4.4):.1f}", "cm", "< 4.2 cm"),
            ("Aorta - Sinus Level", f"{r.uniform(2.8, 3.9):.1f}", "cm", "<= 3.6 cm"),
            ("Aortic Valve - Peak Velocity", f"{r.uniform(1.0, 2.2):.1f}", "m/sec", "<= 2.0 m/sec"),
            ("Mitral Valve - E/A ratio", f"{r.uniform(0.6, 2.2):.2f}", "", ">= 0.8"),
            ("TR Gradient (+ RA = PASP)", f"*{r.randint(22, 55)}", "mm Hg", "<= 25 mm Hg"),
        ])
    body = [
        ("MEASUREMENTS", meas),
        ("PATIENT/TEST INFORMATION",
         f"Indication: {ind}\nHeight: (in) ___\nWeight (lb): ___\nBSA (m2): ___\n"
         f"BP (mm Hg): ___\nHR (bpm): ___\nStatus: Inpatient\nDate/Time: ___ at ___\n"
         f"Test: Portable TTE (Complete)\nDoppler: Full Doppler and color Doppler\n"
         f"Contrast: None\nTechnical Quality: {tech}"),
        ("INTERPRETATION", "Findings:\n\n"
         "LEFT ATRIUM: " + _pick(r, ["Normal LA size.", "Mild LA enlargement."]) + "\n"
         "RIGHT ATRIUM/INTERATRIAL SEPTUM: Normal RA size. Normal IVC diameter (<2.1cm) with <50% "
         "decrease with sniff (estimated RAP 3-8 mmHg).\n"
         f"LEFT VENTRICLE: {lv}\n"
         "RIGHT VENTRICLE: " + _pick(r, ["Normal RV chamber size and free wall motion.",
                                         "Mildly dilated RV cavity."]) + "\n"
         "AORTA: Normal aortic diameter at the sinus level.\n"
         "AORTIC VALVE: Normal aortic valve leaflets (3). No AS. No AR.\n"
         "MITRAL VALVE: " + _pick(r, ["Normal mitral valve leaflets. Trivial MR.",
                                      "Mild mitral annular calcification. Mild (1+) MR."]) + "\n"
         "TRICUSPID VALVE: Normal tricuspid valve leaflets. Mild [1+] TR.\n"
         "PULMONIC VALVE/PULMONARY ARTERY: Pulmonic valve not well seen.\n"
         "PERICARDIUM: No pericardial effusion."),
        ("GENERAL COMMENTS", _pick(r, ["Suboptimal image quality - ventilated patient.",
                                       "Suboptimal image quality - poor echo windows.",
                                       "Echocardiographic results were reviewed by telephone with "
                                       "the houseofficer caring for the patient."])),
        ("Conclusions", concl + " " + _pick(r, [
            "Compared with the prior study (images reviewed) of ___, no significant change.",
            "No prior study available for comparison.",
            "Compared with the prior study of ___, the findings are similar.",
            "If clinically indicated, a transesophageal echocardiogram is recommended to "
            "better exclude endocarditis."])),
        ("IMPRESSION", imp),
    ]
    return _Note(day, "Echo", body, [])


_PROCEDURES = [
    ("PICC", "Placement of a ___ Fr double lumen PICC via the right basilic vein",
     "Ultrasound guidance was used to access the right basilic vein, which was patent and "
     "compressible. A permanent ultrasound image was stored. Under fluoroscopic guidance, a "
     "guidewire was advanced into the SVC and the catheter was trimmed to length and advanced "
     "over the wire. Final chest fluoroscopic image shows the catheter tip in the low SVC.",
     "Successful placement of a ___ cm double lumen PICC with tip at the cavoatrial junction. "
     "The line is ready to use."),
    ("Central line", "Right internal jugular central venous catheter placement",
     "Time out was performed. The right neck was prepped and draped in the usual sterile "
     "fashion with full barrier precautions. Under real-time ultrasound guidance the right IJ "
     "was accessed on the first pass. A triple lumen catheter was placed using Seldinger "
     "technique. All ports flushed and drew back. The catheter was sutured at ___ cm.",
     "Uncomplicated right IJ CVL placement. Post-procedure CXR ordered to confirm position "
     "and r/o PTX."),
    ("Arterial line", "Left radial arterial line placement",
     "Allen test was normal. The wrist was prepped with chlorhexidine and a 20G arterial "
     "catheter was inserted under ultrasound guidance. Good waveform was obtained.",
     "Successful arterial line placement without complication."),
    ("Paracentesis", "Ultrasound-guided diagnostic and therapeutic paracentesis",
     "Preprocedure ultrasound showed a large amount of ascites. The left lower quadrant was "
     "prepped and draped. 1% lidocaine was used for local anesthesia. A 5 Fr Yueh catheter was "
     "advanced into the peritoneal cavity and ___ L of straw-colored fluid was removed. Samples "
     "were sent for cell count, gram stain and culture.",
     "Successful paracentesis with removal of ___ L of ascitic fluid."),
    ("Thoracentesis", "Ultrasound-guided right thoracentesis",
     "Ultrasound demonstrated a moderate right pleural effusion. After local anesthesia, a "
     "catheter was advanced into the pleural space and ___ mL of serous fluid was removed. "
     "Post-procedure ultrasound showed a small residual effusion.",
     "Successful right thoracentesis. Fluid sent for analysis. Follow-up CXR shows no PTX."),
    ("Bronchoscopy", "Flexible bronchoscopy with bronchoalveolar lavage",
     "The bronchoscope was introduced through the ETT. The airways were examined to the "
     "subsegmental level. Moderate thin secretions were suctioned bilaterally. BAL was "
     "performed in the ___ with ___ mL instilled and ___ mL returned. The patient tolerated "
     "the procedure without desaturation.",
     "Normal airway anatomy. Secretions cleared. BAL sent for cultures and cell count."),
    ("Tracheostomy/PEG", "Percutaneous tracheostomy and PEG tube placement",
     "After time out, under bronchoscopic guidance, the trachea was accessed between the "
     "first and second tracheal rings and a size ___ Portex tracheostomy tube was placed "
     "using the Ciaglia technique. A PEG tube was then placed using the pull technique under "
     "endoscopic visualization.",
     "Successful percutaneous tracheostomy and PEG. No immediate complications."),
    ("Dialysis catheter", "Placement of a temporary right femoral dialysis catheter",
     "The right groin was prepped and draped. Under ultrasound guidance the right common "
     "femoral vein was accessed and a ___ Fr temporary HD catheter was placed using Seldinger "
     "technique. Both lumens aspirated and flushed easily.",
     "Successful placement of a temporary HD catheter. Ready for CRRT."),
]


def _procedure(r: Rng, p: _Patient, day: float, which: str | None = None) -> _Note:
    cands = [x for x in _PROCEDURES if which is None or x[0] == which]
    name, title, details, impression = cands[r.randrange(len(cands))]
    if name == "Bronchoscopy" and not p.on_vent(day):
        details = details.replace("through the ETT", "through the nose")
    dx = _pick(r, ["Need for vascular access.", "Respiratory failure.", "Sepsis.",
                   "Ascites.", "Pleural effusion.", "Acute kidney injury.", "Prolonged ICU stay."])
    secs = [
        ("EXAMINATION", title.upper() if r.random() < 0.5 else title),
        ("PRE-PROCEDURE DIAGNOSIS", dx),
        ("POST-PROCEDURE DIAGNOSIS", "Same."),
        ("INDICATION", _indication(r, p, day, _pick(r, ["IV access", "access for CRRT",
                                                        "prolonged ventilation",
                                                        "diagnostic evaluation",
                                                        "hemodynamic monitoring",
                                                        "long-term antibiotics"]))),
        ("OPERATORS", "Dr. ___ and Dr. ___. The attending was present for the entire procedure."),
        ("ANESTHESIA", _pick(r, ["Local anesthesia (1% lidocaine).", "Moderate sedation was "
                                 "provided by the ICU team.", "General anesthesia via existing "
                                 "airway."])),
        ("MEDICATIONS", _pick(r, ["None.", "1% lidocaine.", "Fentanyl ___ mcg, midazolam ___ mg."])),
        ("CONSENT", "The procedure was explained to the patient's ___ and written informed "
                    "consent was obtained. The risks, benefits and alternatives, including "
                    "bleeding, infection, pneumothorax and damage to nearby structures, were "
                    "discussed. A time out was performed confirming the patient's identity, the "
                    "procedure, and the site."),
        ("FLUOROSCOPY TIME AND DOSE", _pick(r, ["___ min, ___ mGy.", "None.", "0.3 min, 2 mGy."])),
        ("CONTRAST", _pick(r, ["None.", "___ mL of Optiray."])),
        ("PROCEDURE DETAILS", details),
        ("COMPLICATIONS", "None immediate."),
        ("ESTIMATED BLOOD LOSS", _pick(r, ["Minimal.", "Less than 5 mL.", "None."])),
        ("SPECIMENS", _pick(r, ["None.", "As above, sent to microbiology.", "None sent."])),
        ("DISPOSITION", _pick(r, ["The patient remained in the ICU in stable condition.",
                                  "Patient tolerated the procedure well and remains in the MICU.",
                                  "Returned to the SICU in stable condition."])),
        ("ATTESTATION", "I was present for the entire procedure and agree with the findings as "
                        "documented above. ___, MD"),
        ("FINDINGS", _pick(r, ["As above.", "Successful procedure.", "See procedure details."])),
        ("IMPRESSION", impression),
    ]
    return _Note(day, "Procedure", secs, [])


# --- chest imaging with lung content (positive evidence, negative scenarios, traps) ------------


def _cxr(r: Rng, p: _Patient, day: float, first: bool, q: str, lungs: list[str],
         impression: list[str], heart: str, pleura: str, extra: str = "") -> _Note:
    exam, tech = _cxr_exam(r, p.on_vent(day))
    dev = _devices(r, p, day)
    findings = []
    if dev:
        findings.append(" ".join(dev))
    pre, post = _cxr_extras(r)
    body = [*pre, *lungs]
    if heart:
        body.append(heart)
    if pleura:
        body.append(pleura)
    body += post
    b = _bones(r)
    if b:
        body.append(b)
    findings.append(" ".join(body))
    return _Note(day, "Radiology", _radiology(exam, _indication(r, p, day, q, extra), tech,
                                              _comparison(r, first), findings, impression, r), [])


def _ct_chest(r: Rng, p: _Patient, day: float, first: bool, q: str, lungs: list[str],
              impression: list[str], pleura: str, heart: str, cta: bool = False) -> _Note:
    exam = "CTA CHEST W&W/O C&RECONS, NON-CORONARY" if cta else _pick(
        r, ["CT CHEST W/O CONTRAST", "CT CHEST WITH CONTRAST", "CT CHEST W/CONTRAST"])
    tech = ("Multidetector CT images of the chest were obtained "
            + ("following intravenous contrast in the pulmonary arterial phase. " if cta else
               "from the thoracic inlet to the upper abdomen. ")
            + "Axial, coronal and sagittal reformats were reviewed.")
    findings = []
    if cta:
        findings.append("Pulmonary arteries are well opacified to the subsegmental level without "
                        "filling defect to suggest pulmonary embolism.")
    findings.append("BASE OF NECK: " + _pick(r, ["Visualized thyroid is unremarkable.",
                                                 "Small hypodense thyroid nodule, not needing "
                                                 "follow-up."]))
    dev = _devices(r, p, day)
    findings.append("MEDIASTINUM AND HILA: " + _pick(r, [
        "No mediastinal or hilar lymphadenopathy.",
        "Mildly enlarged mediastinal lymph nodes, likely reactive, measuring up to ___ mm.",
        "Small mediastinal lymph nodes do not meet size criteria."]) + (" " + " ".join(dev) if dev else ""))
    findings.append("HEART AND VESSELS: " + (heart or _pick(r, [
        "Heart size is normal. No pericardial effusion.",
        "Normal caliber thoracic aorta. Mild coronary calcification. No pericardial effusion."])))
    findings.append("PLEURA: " + (pleura or "No pleural effusion or pneumothorax."))
    findings.append("LUNGS/AIRWAYS: " + " ".join(lungs) + " " + _pick(r, [
        "The airways are patent to the level of the segmental bronchi.",
        "Mild bronchial wall thickening. The central airways are patent.",
        "Secretions in the trachea and dependent bronchi.",
        "Mild centrilobular emphysema in the upper lobes."]))
    findings.append("CHEST WALL: " + _pick(r, [
        "No axillary or supraclavicular lymphadenopathy. Mild gynecomastia.",
        "Unremarkable. No axillary lymphadenopathy.",
        "Diffuse subcutaneous edema of the chest wall."]))
    findings.append("UPPER ABDOMEN: " + _pick(r, [
        "Limited images of the upper abdomen are unremarkable.",
        "Cholelithiasis. The imaged upper abdomen is otherwise unremarkable.",
        "Hypoattenuating liver compatible with steatosis."]))
    findings.append("BONES: " + _pick(r, ["No suspicious osseous lesion. Multilevel degenerative "
                                          "changes of the thoracic spine.",
                                          "No acute fracture.", "Old healed left rib fractures."]))
    imp = ([_pick(r, ["No pulmonary embolism.", "No evidence of PE."])] if cta else []) + impression
    return _Note(day, "Radiology", _radiology(exam, _indication(r, p, day, q), tech,
                                              _comparison(r, first), findings, imp, r,
                                              "Total DLP (Body) = ___ mGy-cm."), [])


# --- bilateral-opacity studies, shared by positives and their mimics ---------------------------

_CHANGE = {
    "onset": ["new", "newly developed", "new since ___", "markedly worse", "new and extensive",
              "increased"],
    "worse": ["worsening", "increased", "progressed", "slightly worse", "worse"],
    "persist": ["unchanged", "persistent", "not significantly changed", "stable",
                "essentially unchanged"],
    "improve": ["slightly improved", "improving", "somewhat decreased", "mildly improved",
                "improved"],
    "late": ["improving", "slowly improving", "decreased but persistent", "residual",
             "improved"],
    "resolve": ["largely resolved", "nearly resolved", "markedly improved", "much improved",
                "improved"],
}

_IMP_SHARED = [
    "Diffuse bilateral airspace opacities, {change} compared to ___.",
    "Bilateral opacities may reflect edema and/or infection; {change} since prior.",
    "Multifocal bilateral opacities, {change}; clinical correlation recommended.",
    "Extensive bilateral opacities, which may represent widespread infection, aspiration, or "
    "edema.",
    "{Change} bilateral airspace disease.",
    "Bilateral parenchymal opacities, {change}. Differential includes edema, infection, or "
    "hemorrhage.",
    "{Change} diffuse bilateral opacities; edema versus multifocal infection.",
    "{Change} bilateral pulmonary opacities.",
]
_IMP_ARDS = [
    "Diffuse bilateral consolidation without cardiomegaly or large effusions.",
    "Bilateral airspace opacities, likely noncardiogenic pulmonary edema in this patient with "
    "{hx}.",  # positives only (see _bilateral_study)
    "Bilateral pulmonary opacities, not explained by cardiac enlargement or effusion.",
    "Severe bilateral parenchymal opacification, {change}. Differential includes multifocal "
    "pneumonia, noncardiogenic edema, or hemorrhage.",
    "{Change} extensive bilateral airspace disease with air bronchograms.",
    "{Change} diffuse alveolar opacities in both lungs; the heart is not enlarged.",
]
_IMP_EDEMA = [
    "Moderate pulmonary edema, {change}.", "Findings compatible with CHF.",
    "Pulmonary edema with bilateral effusions.", "Volume overload with bilateral pleural effusions.",
    "Bilateral opacities, most likely pulmonary edema.", "{Change} pulmonary edema and cardiomegaly.",
    "Bilateral airspace opacities likely represent edema; infection not excluded.",
    "Cardiogenic versus noncardiogenic pulmonary edema, {change}.",
    "{Change} interstitial and alveolar edema.",
]
_IMP_DIURESIS = [
    "Improved pulmonary edema after diuresis.",
    "Near resolution of bilateral opacities, consistent with resolving edema.",
    "Improving volume overload.",
    "Rapid improvement, supporting pulmonary edema rather than infection.",
    "Bilateral opacities have improved following diuresis.",
]
_ARDS_IMP_MENTION = [
    "Findings are consistent with ARDS in the appropriate clinical setting.",
    "Appearance is compatible with acute respiratory distress syndrome.",
    "Diffuse bilateral airspace disease, likely ARDS.",
    "Differential includes ARDS, multifocal pneumonia, and pulmonary edema; ARDS is favored "
    "given the normal heart size.",
    "Progression of bilateral opacities consistent with evolving ARDS.",
    "Pattern most consistent with diffuse alveolar damage / ARDS.",
]
_CT_LUNGS_ARDS = [
    "Diffuse bilateral ground-glass opacities with dependent consolidation in both lower lobes, "
    "demonstrating an anterior-posterior gradient.",
    "Extensive bilateral ground-glass and consolidative opacities, with air bronchograms in the "
    "dependent lungs. Relative sparing of the nondependent lung.",
    "Patchy and confluent ground-glass opacification throughout both lungs with interlobular "
    "septal thickening (crazy paving) and dense posterior consolidation.",
    "Bilateral heterogeneous consolidation and ground-glass attenuation involving all lobes.",
]
_CT_LUNGS_EDEMA = [
    "Diffuse ground-glass opacity with smooth interlobular septal thickening and bilateral "
    "effusions, consistent with pulmonary edema.",
    "Bilateral dependent consolidation and ground-glass opacities with moderate effusions and "
    "enlarged pulmonary veins.",
    "Perihilar predominant ground-glass opacities with septal thickening (crazy paving) and "
    "peribronchovascular thickening.",
    "Extensive bilateral ground-glass opacities with dependent atelectasis and bilateral "
    "effusions.",
]
_Q_BILAT = ["worsening hypoxemia", "increased O2 requirement", "interval change?",
            "eval for worsening infiltrates", "hypoxia", "eval for edema vs PNA",
            "fever and hypoxia", "PEEP ___, FiO2 ___%, interval change?",
            "s/p diuresis, interval change?", "volume overload?", "SOB, eval for edema",
            "desaturation", "eval for pneumonia"]
_VENT_EXTRA_SHARED = ["on FiO2 ___% and PEEP ___", "P/F ratio ___", "vent settings ___",
                      "hypoxemic on the vent", "FiO2 ___%"]
_VENT_EXTRA_ARDS = ["refractory hypoxemia", "worsening oxygenation despite PEEP ___",
                    "proned overnight", "paralyzed, high vent requirements",
                    "hypoxemic on high PEEP", "low tidal volume ventilation"]


def _bilateral_study(r: Rng, p: _Patient, day: float, first: bool, stage: str, lean: str,
                     mention: bool = False, ct: bool = False) -> _Note:
    """A chest study describing bilateral opacities at ``stage``.

    ``lean``: "ards" (no cardiac explanation: air bronchograms, normal heart, no effusions) or
    "edema" (congestion, cardiomegaly, effusions), and how the reader leans in the impression;
    both draw on one shared pool of descriptions, so that wording alone rarely decides.
    """
    change = _pick(r, _CHANGE[stage])
    ards = lean == "ards"
    if ct:
        lungs = [_pick(r, _CT_LUNGS_ARDS if (ards or r.random() < 0.3) else _CT_LUNGS_EDEMA)]
        if stage == "late" and r.random() < 0.6:
            lungs.append(_pick(r, ["There is traction bronchiectasis and reticulation in the "
                                   "anterior lungs, suggesting fibroproliferative change.",
                                   "Evolving reticular opacities with mild traction "
                                   "bronchiectasis."]))
        lungs.append(_pick(r, ["No cavitation.", "Airways are patent.", "No pneumothorax.",
                               "Central airways are patent to the segmental level."]))
    else:
        if stage == "resolve":
            lungs = [_pick(r, ["Interval improvement in the bilateral opacities.",
                               "Bilateral opacities have largely resolved.",
                               "Decreased bilateral perihilar opacities.",
                               "Marked improvement of the bilateral airspace opacities.",
                               "Pulmonary vascular congestion has decreased."])]
        else:
            lungs = [_bilateral_sentence(r, lean)]
            if stage != "onset" and r.random() < 0.8:
                verb = "have progressed" if change == "progressed" else f"are {change}"
                lead = _pick(r, [f"Compared to ___, the bilateral opacities {verb}.",
                                 f"{_cap(change)} compared to the prior exam.",
                                 f"Since ___, the lung opacities {verb}.",
                                 f"{_cap(change)} from ___."])
                lungs.insert(0 if r.random() < 0.7 else 1, lead)
        if r.random() < 0.35:
            lungs.append(_pick(r, ["Lung volumes are low.", "Lung volumes are diminished.",
                                   "There is no focal lobar collapse.", "Air bronchograms are noted.",
                                   "Findings are more pronounced at the bases.",
                                   "Retrocardiac opacity persists."]))
    # heart, vessels, pleura: positives mostly have no cardiac explanation (by how clear the
    # case is); mimics mostly do, cardiogenic edema nearly always
    c = p.clarity
    if p.looks_positive:
        big, congest = 0.05 + 0.4 * (1 - c), 0.5 * (1 - c)
        pl = [(_pleura_clear, 0.5 + 0.4 * c), (_pleura_small, 0.5 - 0.4 * c), (_pleura_big, 0.05)]
    elif p.scenario == "cardiogenic_edema":
        big, congest = 0.85, 0.8
        pl = [(_pleura_clear, 0.1), (_pleura_small, 0.4), (_pleura_big, 0.5)]
    else:
        big, congest = 0.25, 0.4
        pl = [(_pleura_clear, 0.4), (_pleura_small, 0.4), (_pleura_big, 0.2)]
    if not ct and stage != "resolve" and r.random() < congest:
        lungs.append(_congestion(r))
    big_heart = r.random() < big
    heart = _heart_big(r) if big_heart else _heart_normal(r)
    x = r.random() * sum(w for _, w in pl)
    for fn, w in pl:
        x -= w
        if x <= 0:
            pleura = fn(r)
            break
    else:
        pleura = _pleura_clear(r)
    # impression
    fill = {"change": change, "Change": _cap(change), "hx": p.hx}
    if stage == "resolve" or (stage in ("improve", "late") and r.random() < 0.3):
        imp = [_pick(r, _IMP_DIURESIS if not p.looks_positive or r.random() < 0.5 else
                     ["Bilateral opacities have improved.", "Improving bilateral opacities."])]
    elif r.random() < 0.5:
        imp = [_pick(r, _IMP_SHARED).format(**fill)]
    else:
        pool = _IMP_ARDS if ards else _IMP_EDEMA
        if ards and not p.positive:  # a negative's history never explains noncardiogenic edema
            pool = [x for x in pool if "{hx}" not in x]
        imp = [_pick(r, pool).format(**fill)]
    if mention:
        imp.append(_pick(r, _ARDS_IMP_MENTION))
    # indication
    q = _pick(r, _Q_BILAT)
    if stage == "onset" and p.on_vent(day) and r.random() < 0.5:
        q = _pick(r, ["s/p intubation, eval ETT placement", "intubated for hypoxemic respiratory "
                      "failure, ETT position?", "new intubation", "hypoxemia, intubated, eval"])
    extra = ""
    if p.on_vent(day) and r.random() < 0.5:
        pool = _VENT_EXTRA_SHARED + (_VENT_EXTRA_ARDS if p.looks_positive or r.random() < 0.3
                                     else [])
        extra = _pick(r, pool)
    if ct:
        n = _ct_chest(r, p, day, first, _pick(r, ["eval for PE", "worsening hypoxemia, r/o PE",
                                                   "eval parenchyma", "persistent fevers, r/o "
                                                   "abscess"]), lungs, imp, pleura,
                      heart if big_heart else "", cta=r.random() < 0.5)
    else:
        n = _cxr(r, p, day, first, q, lungs, imp, heart, pleura, extra)
    if p.positive:
        kinds = ["bilateral_opacities" if stage == "onset" else "evolution"]
        if stage != "onset" and r.random() < 0.5:
            kinds.append("bilateral_opacities")
        if p.on_vent(day) and (stage == "onset" or extra):
            kinds.append("ventilation")
        if mention:
            kinds.append("ards_mention")
    else:
        kinds = ["trap_mimic"]
    n.kinds = kinds
    return n


def _insult_note(r: Rng, p: _Patient, day: float, first: bool) -> _Note:
    """A note that documents the precipitating insult (before the bilateral opacities)."""
    ins = p.insult
    if ins == "pancreatitis":
        n = _ct_abd(r, p, day, first, special="pancreatitis")
    elif ins == "sepsis" and r.random() < 0.6:
        n = _ct_abd(r, p, day, first, special="sepsis")
    elif ins == "trauma":
        if r.random() < 0.5:
            n = _ct_abd(r, p, day, first, special="trauma")
        else:
            n = _ct_chest(r, p, day, first, "trauma, eval injuries", [
                _pick(r, ["Right lower lobe pulmonary contusion with small laceration.",
                          "Patchy ground-glass opacity in the right lung consistent with "
                          "contusion."]), "The left lung is clear."], [
                "Multiple right rib fractures with underlying pulmonary contusion.",
                "Small right PTX."], "Small right pneumothorax.", "")
    elif ins in ("pneumonia", "aspiration"):
        n = _focal_pneumonia(r, p, day, first, 0, aspiration=ins == "aspiration")
    else:  # transfusion, overdose, sepsis without CT
        n = _cxr(r, p, day, first, _pick(r, ["hypotension", "eval", "pre-intubation",
                                             "line placement", "hypoxia"]),
                 [_pick(r, ["Lungs are clear.", "No focal consolidation.",
                            "Lungs are grossly clear, with low lung volumes."])],
                 [_pick(r, ["No acute cardiopulmonary process.", "No acute intrathoracic process."])],
                 _heart_normal(r), _pleura_clear(r))
    n.kinds = ["onset_insult"]
    return n


_SIDES = ["right lower lobe", "left lower lobe", "right middle lobe", "right upper lobe",
          "lingula", "left upper lobe", "right base", "left base"]


def _focal_pneumonia(r: Rng, p: _Patient, day: float, first: bool, phase: int,
                     aspiration: bool = False) -> _Note:
    """Unilateral / lobar pneumonia or aspiration (insult of a positive, or a negative's stay)."""
    side = _pick(r, _SIDES)
    what = "aspiration" if aspiration or r.random() < 0.15 else "pneumonia"
    other = ("The left lung is clear." if side.startswith("right") else
             "The right lung is clear.")
    if phase == 0:
        lungs = [_pick(r, [f"Dense consolidation in the {side} with air bronchograms.",
                           f"New {side} opacity concerning for {what}.",
                           f"Focal {_pick(r, ['airspace', 'consolidative'])} opacity in the "
                           f"{side}.", f"Patchy opacity in the {side}, new since ___.",
                           f"Multifocal patchy opacities in the {side}, likely {what}.",
                           f"There is a {side} opacity, likely {what}."]),
                 _pick(r, ["The contralateral lung is clear.", other, "Remaining lungs are clear.",
                           "The remainder of the lungs are clear.", ""])]
        imp = [_pick(r, [f"{_cap(side)} {what}.", f"{_cap(side)} consolidation concerning "
                         f"for {what}.", f"Findings consistent with {side} {what}.",
                         f"Focal {side} opacity, concerning for pneumonia or aspiration in the "
                         "appropriate clinical setting."])]
    else:
        lungs = [_pick(r, [f"Improving {side} consolidation.",
                           f"Residual opacity in the {side}, decreased.",
                           f"{_cap(side)} opacity is unchanged.",
                           f"Compared to ___, the {side} opacity has improved."])]
        imp = [_pick(r, ["Improving pneumonia.", f"Slowly resolving {side} pneumonia.",
                         "Persistent focal consolidation.", "Improved, no new opacity."])]
    return _cxr(r, p, day, first, _pick(r, ["fever, cough", "r/o pneumonia", "hypoxia, fever",
                                            "eval interval change", "c/f aspiration", "r/o PNA"]),
                lungs, imp, _heart_normal(r), _pleura_clear(r) if r.random() < 0.7 else
                _pleura_small(r))


# --- negative content -------------------------------------------------------------------------


def _neg_key_note(r: Rng, p: _Patient, day: float, first: bool, phase: int) -> _Note:
    """A study whose content reflects the negative scenario; phase 0 = first, 1 = follow-up."""
    sc = p.scenario
    kinds: list[str] = []
    if sc in ("cardiogenic_edema", "overload_mimic"):
        mimic = sc == "overload_mimic"
        bilat = r.random() < (0.9 if mimic else 0.55)
        if bilat:
            if phase == 0:
                stage = _pick(r, ["onset", "worse", "onset"])
            else:
                stage = _pick(r, ["resolve", "improve", "persist", "worse"] if mimic else
                              ["resolve", "resolve", "improve", "persist"])
            lean = "edema" if r.random() < (0.55 if mimic else 0.75) else "ards"
            return _bilateral_study(r, p, day, first, stage, lean, ct=r.random() < 0.12)
        if phase == 0:
            lungs = [_congestion(r)]
            if r.random() < 0.5:
                lungs.append(_congestion(r))
            imp = [_pick(r, _IMP_EDEMA).format(change="new", Change="New", hx=p.hx)]
        else:
            lungs = [_pick(r, ["Interval improvement in pulmonary edema.",
                               "Pulmonary vascular congestion has decreased.",
                               "Resolved interstitial edema."])]
            imp = [_pick(r, _IMP_DIURESIS)]
        heart = _heart_big(r) if (sc == "cardiogenic_edema" or r.random() < 0.3) else _heart_normal(r)
        pleura = _pleura_big(r) if r.random() < 0.4 else _pleura_small(r)
        return _cxr(r, p, day, first, _pick(r, _Q_BILAT), lungs, imp, heart, pleura)
    if sc == "lobar_pneumonia":
        return _focal_pneumonia(r, p, day, first, phase)
    if sc == "chronic_ild":
        lungs = [_pick(r, [
            "Bilateral reticular opacities with basilar predominance, unchanged since ___.",
            "Diffuse bilateral interstitial opacities, chronic and unchanged from studies in ___.",
            "Chronic bilateral coarse reticular and ground-glass opacities, stable.",
            "Extensive bilateral interstitial abnormality, stable over multiple prior studies."])]
        imp = [_pick(r, ["Chronic interstitial lung disease, unchanged. No superimposed acute "
                         "process.", "Stable fibrotic lung disease.",
                         "Bilateral chronic interstitial opacities without acute change.",
                         "Findings compatible with pulmonary fibrosis (UIP pattern), stable."])]
        if r.random() < 0.35:
            return _with_kinds(_ct_chest(r, p, day, first, "ILD follow-up", [
                _pick(r, ["Subpleural basilar predominant reticulation with traction "
                          "bronchiectasis and honeycombing.", "Peripheral reticulation and "
                          "ground-glass opacity with traction bronchiectasis, bilaterally."]),
                "No consolidation."], imp, "", ""), ["trap_mimic"])
        return _with_kinds(_cxr(r, p, day, first, _pick(r, ["SOB", "ILD, hypoxia",
                                                            "eval interval change", "cough"]),
                                lungs, imp, _heart_normal(r), _pleura_clear(r)), ["trap_mimic"])
    if sc == "atelectasis":
        lungs = [_pick(r, ["Bibasilar atelectasis.", "Low lung volumes with bibasilar opacities, "
                           "likely atelectasis.", "Left lower lobe collapse.",
                           "Bilateral basilar opacities, likely atelectasis.",
                           "Plate-like atelectasis at both bases.",
                           "Bibasilar streaky opacities most consistent with atelectasis.",
                           "Retrocardiac opacity likely reflects atelectasis.",
                           "Patchy bilateral lower lobe opacities, likely atelectasis, though "
                           "aspiration is not excluded."])]
        low = lungs[0].lower()
        if "bibasilar" in low or "bilateral" in low or "both" in low:
            kinds.append("trap_mimic")
        imp = [_pick(r, ["Bibasilar atelectasis.", "Left lower lobe atelectasis/collapse.",
                         "Low lung volumes and atelectasis. No pneumonia.",
                         "Atelectasis, improved." if phase else "Atelectasis; infection is less "
                         "likely.", "Bilateral lower lobe opacities, likely atelectasis."])]
        return _with_kinds(_cxr(r, p, day, first, _pick(r, ["post-op hypoxia", "low sats",
                                                            "eval for PNA", "eval", "hypoxia"]),
                                lungs, imp, _heart_normal(r), _pleura_clear(r)
                                if r.random() < 0.6 else _pleura_small(r)), kinds)
    if sc == "copd":
        lungs = [_pick(r, ["The lungs are hyperinflated with flattening of the hemidiaphragms.",
                           "Hyperexpanded lungs consistent with COPD. No focal consolidation.",
                           "Emphysematous changes with upper lobe predominant lucency.",
                           "Chronic interstitial markings and hyperinflation, unchanged."])]
        imp = [_pick(r, ["COPD without acute process.", "Hyperinflation. No pneumonia.",
                         "Emphysema. No acute cardiopulmonary process."])]
        return _cxr(r, p, day, first, _pick(r, ["SOB, wheezing", "COPD exacerbation", "eval"]),
                    lungs, imp, _heart_normal(r), _pleura_clear(r))
    if sc == "postop":
        lungs = [_pick(r, ["Median sternotomy wires and mediastinal clips.",
                           "Postsurgical changes of right upper lobectomy with volume loss.",
                           "Left chest tube in place. Tiny apical PTX.",
                           "Mediastinal drains and epicardial pacing wires."]),
                 _pick(r, ["Left basilar atelectasis and small effusion.",
                           "Postoperative widening of the mediastinum is stable.",
                           "Small right apical pneumothorax, decreased.", "Mild left basilar "
                           "atelectasis.", "Mild bibasilar atelectasis."])]
        imp = [_pick(r, ["Expected postoperative appearance.", "Small PTX, decreased.",
                         "Postoperative changes without acute process.",
                         "Compared to ___, no significant change."])]
        return _cxr(r, p, day, first, _pick(r, ["s/p surgery, eval", "chest tube removal, r/o PTX",
                                                "post-op check"]), lungs, imp,
                    _heart_normal(r), "")
    if sc == "nodule":
        lungs = ["The lungs are clear of consolidation.", _pick(r, [
            "A ___ mm nodule in the right upper lobe.", "Spiculated ___ cm left upper lobe "
            "nodule.", "Several sub-4 mm pulmonary nodules bilaterally."]),
            _pick(r, ["Mild dependent atelectasis.", "Minimal bibasilar ground-glass opacity, "
                      "likely dependent atelectasis.", ""])]
        imp = [_pick(r, ["Pulmonary nodule; recommend follow-up CT per Fleischner guidelines.",
                         "Indeterminate nodule. Follow-up chest CT in 3 months.",
                         "Small nodules, likely benign."])]
        return _ct_chest(r, p, day, first, "nodule follow-up", lungs, imp, "", "")
    # normal ICU stay
    return _cxr(r, p, day, first, _pick(r, ["hypoxia", "fever", "eval for PNA", "eval", "SOB"]),
                [_pick(r, ["Lungs are clear.", "No focal consolidation.",
                           "The lungs are well expanded and clear.", "Lungs are clear without "
                           "focal consolidation, effusion or edema.",
                           "Compared to ___, the lungs remain clear."])],
                [_pick(r, ["No acute cardiopulmonary process.", "No acute intrathoracic process.",
                           "No pneumonia.", "Normal chest radiograph."])],
                _heart_normal(r), _pleura_clear(r))


def _with_kinds(n: _Note, kinds: list[str]) -> _Note:
    n.kinds = kinds
    return n


# (findings, impression) pairs that do not support ARDS, for trap notes
_TRAP_LUNGS = [
    ("Lungs are clear.", "No acute cardiopulmonary process."),
    ("No focal consolidation.", "No focal consolidation."),
    ("Mild left basilar atelectasis. No focal consolidation.", "Mild left basilar atelectasis."),
    ("Mild bibasilar atelectasis.", "Mild bibasilar atelectasis."),
    ("Patchy right basilar opacity, likely atelectasis.",
     "Right basilar opacity, likely atelectasis."),
    ("Lungs are grossly clear, with low lung volumes.", "Low lung volumes. No consolidation."),
    ("Mild pulmonary vascular congestion without overt edema.", "Mild vascular congestion."),
]
_CHRONIC_LUNGS = [
    ("Mild chronic interstitial markings at the bases, unchanged.",
     "Stable chronic interstitial markings, likely sequela of prior lung injury. No acute "
     "process."),
    ("Mild biapical and basilar scarring, stable.", "Mild chronic scarring. No acute findings."),
    ("Lungs are clear.", "No acute cardiopulmonary process."),
]


def _trap_note(r: Rng, p: _Patient, day: float, first: bool, kind: str) -> _Note:
    """A note that names ARDS without supporting it; findings and impression agree."""
    finding, base = _pick(r, _CHRONIC_LUNGS if kind == "trap_history" else _TRAP_LUNGS)  # type: ignore[arg-type]
    lungs = [finding]
    imp = [base]
    extra = ""
    if kind == "trap_rule_out":
        q = _pick(r, ["r/o ARDS", "eval for ARDS", "concerning for ARDS, please eval",
                      "hypoxia, ? ARDS", "c/f ARDS", "worsening hypoxemia, r/o ARDS vs PNA",
                      "rule out acute respiratory distress syndrome"])
        if r.random() < 0.5:
            imp.append(_pick(r, ["No evidence of ARDS.", "No radiographic findings to suggest "
                                 "ARDS.", "No evidence of diffuse airspace disease."]))
    elif kind == "trap_history":
        q = _pick(r, _Q_LINE)
        extra = _pick(r, ["h/o ARDS in ___", "remote h/o ARDS", "h/o ARDS ___ years ago after "
                          "pancreatitis", "PMH: ARDS requiring trach (___)",
                          "hx of ARDS in ___, now recovered", "prior ARDS (___)"])
    elif kind == "trap_negated":
        q = _pick(r, ["hypoxia", "interval change?", "eval for infiltrate", "increased O2 need"])
        imp.append(_pick(r, ["No evidence of ARDS or pneumonia.", "No findings to suggest ARDS.",
                             "Specifically, no diffuse opacities to suggest ARDS.",
                             "No findings of acute respiratory distress syndrome."]))
    else:  # trap_hedged
        q = _pick(r, ["hypoxia", "eval for edema vs PNA", "fluid overload?", "increased O2 need"])
        imp.append(_pick(r, ["ARDS is considered unlikely.", "Early ARDS is not favored.",
                             "Although early ARDS cannot be entirely excluded, the appearance "
                             "does not suggest it.", "Doubt ARDS.",
                             "Findings are not typical of ARDS."]))
    if r.random() < 0.75:
        n = _cxr(r, p, day, first, q, lungs, imp, _heart_normal(r) if r.random() < 0.7
                 else _heart_big(r), _pleura_clear(r), extra)
    else:
        n = _ct_chest(r, p, day, first, q, lungs, imp, "", "", cta=r.random() < 0.5)
        if extra:
            secs = n.sections
            i = [h for h, _ in secs].index("INDICATION")
            secs[i] = ("INDICATION", _indication(r, p, day, q, extra))
    n.kinds = [kind]
    return n


# ---------------------------------------------------------------------------------------------
# patient assembly
# ---------------------------------------------------------------------------------------------


def _n_notes(r: Rng) -> int:
    # lognormal, median ~10, long tail, clipped to 2..60
    return max(2, min(60, round(r.lognormvariate(2.45, 0.72))))


def _background(r: Rng, p: _Patient, day: float, first: bool) -> _Note:
    ct_chest_ok = not p.looks_positive or day < p.onset_day - 0.5
    kind = _wpick(r, [("cxr", 0.26), ("ct_abd", 0.2), ("us", 0.14), ("ct_head", 0.08),
                      ("abd_film", 0.03), ("proc", 0.16), ("echo", 0.08 if not p.looks_positive else 0.0),
                      ("ct_chest", 0.06 if ct_chest_ok else 0.0)])
    if kind == "ct_chest":
        return _ct_chest(r, p, day, first, _pick(r, ["eval for PE", "tachycardia, r/o PE",
                                                      "fever, eval for source", "eval for abscess"]),
                         [_pick(r, ["Mild dependent atelectasis in both lower lobes.",
                                    "Minimal bibasilar atelectasis. No consolidation.",
                                    "The lungs are clear.", "Scattered subsegmental atelectasis. "
                                    "No focal consolidation.", "Mild dependent ground-glass "
                                    "opacity, likely atelectasis."])],
                         [_pick(r, ["No acute intrathoracic process.", "Minimal atelectasis.",
                                    "No pneumonia or abscess."])], "", "", cta=r.random() < 0.6)
    if kind == "cxr":
        return _cxr_line_check(r, p, day, first)
    if kind == "ct_abd":
        return _ct_abd(r, p, day, first)
    if kind == "us":
        return _us_abd(r, p, day, first)
    if kind == "ct_head":
        return _ct_head(r, p, day, first)
    if kind == "abd_film":
        return _abd_film(r, p, day, first)
    if kind == "echo":
        return _echo(r, p, day, low_ef=p.scenario == "cardiogenic_edema")
    return _procedure(r, p, day)


def _make_patient(r: Rng, pid: str, positive: bool, trapped: bool, mention: bool) -> _Patient:
    sex = "M" if r.random() < 0.56 else "F"
    n = _n_notes(r)
    admit = datetime(r.randint(2110, 2195), r.randint(1, 12), r.randint(1, 28),
                     r.randint(0, 23), r.randint(0, 59), r.randint(0, 59))
    if positive:
        insult = _wpick(r, _INSULT_WEIGHTS)
        scenario = "ards"
        hx = _pick(r, _INSULTS[insult]["hx"])
        if insult in ("sepsis", "pancreatitis", "transfusion") and r.random() < 0.45:
            hx = _pick(r, _RESUSC_HX)
    else:
        scenario = _wpick(r, _NEG_SCENARIOS)
        # negatives share the insults of positives (sepsis, pancreatitis, trauma ...): an insult
        # without lung injury, or with a lung picture that Berlin does not call ARDS
        insult = ""
        hx = _pick(r, _NEG_HX[scenario])
        if scenario == "late_bilateral":
            insult = _wpick(r, _INSULT_WEIGHTS)
            hx = _pick(r, _INSULTS[insult]["hx"])
        elif scenario in ("normal", "atelectasis", "overload_mimic", "postop") and r.random() < 0.6:
            insult = _wpick(r, _INSULT_WEIGHTS)
            if scenario == "postop" and insult not in ("trauma", "pancreatitis", "sepsis"):
                insult = "trauma"
            if insult in ("pneumonia", "aspiration") and scenario != "overload_mimic":
                insult = "sepsis"
            hx = _pick(r, _INSULTS[insult]["hx"])
        elif scenario == "lobar_pneumonia" and r.random() < 0.6:
            insult = _pick(r, ["pneumonia", "aspiration"])
            hx = _pick(r, _INSULTS[insult]["hx"])
    pmh = r.sample(_PMH, r.choice([0, 1, 2, 2, 3, 3, 4]))
    if scenario == "cardiogenic_edema" and not any("CHF" in x or "HF" in x for x in pmh):
        pmh.append(_pick(r, ["CHF", "HFrEF", "ischemic CMP"]))
    if scenario == "copd" and "COPD" not in pmh:
        pmh.append("COPD")
    p = _Patient(pid, positive, sex, scenario, insult, admit, n, hx=hx,
                 pmh=", ".join(pmh))
    p.mention = mention
    # how clear-cut the chest imaging is: a positive's low clarity reads like fluid overload
    p.clarity = r.random()
    los = max(1.0, n * r.uniform(0.45, 1.2))
    p.times = sorted(r.uniform(0, los) for _ in range(n))
    if trapped:
        p.trap_kinds = [_wpick(r, [("trap_rule_out", 0.4), ("trap_history", 0.2),
                                   ("trap_negated", 0.2), ("trap_hedged", 0.2)])]
        if n >= 8 and r.random() < 0.3:
            p.trap_kinds.append(_wpick(r, [("trap_rule_out", 0.4), ("trap_history", 0.2),
                                           ("trap_negated", 0.2), ("trap_hedged", 0.2)]))
    return p


def _pos_lean(r: Rng, p: _Patient) -> str:
    # a less clear-cut positive is read more often as edema
    return "ards" if r.random() < 0.5 + 0.45 * p.clarity else "edema"


def _schedule(r: Rng, p: _Patient) -> list[_Note]:
    """Decide which note is what, set the device timeline, and render every note."""
    n = p.n_notes
    t = p.times
    roles: list[str] = ["bg"] * n
    if p.looks_positive:
        # onset anywhere in the timeline; evidence in a minority of notes
        n_ev = max(1, min((n - 1) // 2 if n > 2 else 1, round(n * r.uniform(0.12, 0.35))))
        i_on = r.randrange(n)
        # keep room after onset for an evolution note when possible
        if n_ev >= 2 and i_on == n - 1 and n > 2:
            i_on = r.randrange(n - 1)
        left = n_ev - 1
        if p.positive:
            before = [i for i in range(i_on) if t[i_on] - t[i] <= 7.0]
            if left and before and r.random() < 0.7:
                roles[r.choice(before[-3:])] = "insult"
                left -= 1
        else:
            # late_bilateral: the same picture, but more than a week after the insult (documented
            # in the first note), so it falls outside the Berlin window
            i_on = max(1, i_on)
            gap = r.uniform(8.5, 14.0) - (t[i_on] - t[0])
            if gap > 0:
                for i in range(i_on, n):
                    t[i] += gap
            roles[0] = "insult"
        p.onset_day = t[i_on]
        roles[i_on] = "onset"
        after = [i for i in range(i_on + 1, n)]
        r.shuffle(after)
        for i in sorted(after[:left]):
            roles[i] = "evolve"
        left -= min(left, len(after))
        if left and r.random() < 0.6:
            free = [i for i in range(n) if roles[i] == "bg"]
            if free:
                roles[r.choice(free)] = "echo_ok"
        # ventilation: usually intubated at onset
        if r.random() < 0.85:
            start = max(0.0, p.onset_day - r.uniform(0.0, 0.4))
            end = p.onset_day + r.uniform(4, 25)
            p.intubated = (start, end)
            if end - start > 10 and r.random() < 0.5:
                p.trach_day = start + r.uniform(8, 14)
        if p.trap_kinds:  # a late_bilateral negative can carry traps too
            free = [i for i in range(n) if roles[i] == "bg"]
            r.shuffle(free)
            for k, kind in enumerate(p.trap_kinds[: len(free)]):
                roles[free[k]] = kind
    else:
        n_key = max(1, min(n // 2, round(n * r.uniform(0.1, 0.3))))
        idx = sorted(r.sample(range(n), n_key))
        for k, i in enumerate(idx):
            roles[i] = "neg0" if k == 0 else "neg1"
        free = [i for i in range(n) if roles[i] == "bg"]
        r.shuffle(free)
        for k, kind in enumerate(p.trap_kinds):
            if k < len(free):
                roles[free[k]] = kind
            else:  # a 2-note patient: the trap replaces the follow-up key note
                roles[idx[-1]] = kind
        # an insult without lung injury is documented like a positive's
        free = free[len(p.trap_kinds):]
        if p.insult and free and r.random() < 0.6:
            roles[free[0]] = "insult"
        vent_p = {"overload_mimic": 0.7, "lobar_pneumonia": 0.4, "cardiogenic_edema": 0.3,
                  "postop": 0.5, "normal": 0.35, "atelectasis": 0.3, "copd": 0.35, "nodule": 0.1,
                  "chronic_ild": 0.25}
        if r.random() < vent_p[p.scenario]:
            start = t[idx[0]] - r.uniform(0, 1.0) if r.random() < 0.6 else r.uniform(0, t[-1])
            p.intubated = (max(0.0, start), max(0.0, start) + r.uniform(1, 12))
        p.onset_day = t[idx[0]]
    if r.random() < 0.55:
        p.picc_day = r.uniform(0, t[-1] + 0.1)
    if r.random() < 0.5:
        p.cvl_day = r.uniform(0, max(0.1, t[-1] / 3))
    if p.intubated is not None or r.random() < 0.3:
        a = p.intubated[0] if p.intubated else r.uniform(0, t[-1])
        p.ngt = (a, a + r.uniform(3, 30))

    notes: list[_Note] = []
    stage_cycle = ["worse", "persist", "improve", "late"]
    evolve_seen = 0
    for i, role in enumerate(roles):
        day = t[i]
        first = i == 0
        if role == "onset":
            nt = _bilateral_study(r, p, day, first, "onset", _pos_lean(r, p),
                                  p.mention and r.random() < 0.6, ct=r.random() < 0.15)
        elif role == "evolve":
            stage = stage_cycle[min(evolve_seen, 3)] if r.random() < 0.7 else _pick(r, stage_cycle)
            if day - p.onset_day > 12:
                stage = "late"
            evolve_seen += 1
            nt = _bilateral_study(r, p, day, first, stage, _pos_lean(r, p),
                                  p.mention and r.random() < 0.35, ct=r.random() < 0.2)
        elif role == "insult":
            nt = _insult_note(r, p, day, first)
        elif role == "echo_ok":
            nt = _echo(r, p, day, low_ef=False)
            nt.kinds = ["cardiac_excluded"]
        elif role in ("neg0", "neg1"):
            nt = _neg_key_note(r, p, day, first, 0 if role == "neg0" else 1)
        elif role.startswith("trap_"):
            nt = _trap_note(r, p, day, first, role)
        else:
            nt = _background(r, p, day, first)
        notes.append(nt)
    # a positive whose notes never got the ARDS word although chosen to: put it in the onset note
    if p.mention and not any("ards_mention" in x.kinds for x in notes):
        i_on = roles.index("onset")
        notes[i_on] = _bilateral_study(r, p, t[i_on], i_on == 0, "onset", "ards", True)
    return notes


_WET_ABBREV = [("Endotracheal tube", "ETT"), ("endotracheal tube", "ETT"), ("bilateral", "b/l"),
               ("Bilateral", "B/l"), ("pneumothorax", "PTX"), ("pleural effusions", "effusions"),
               ("compared to", "vs"), ("consistent with", "c/w"), ("pneumonia", "PNA"),
               ("without", "w/o"), ("with ", "w/ "), (" and ", " & "), ("atelectasis", "atx"),
               ("No acute cardiopulmonary process", "NACPP")]


def _render(r: Rng, note: _Note) -> str:
    width = r.randint(68, 80)
    typo_p = 0.35
    out: list[str] = []
    if note.note_type == "Radiology" and r.random() < 0.35:
        # a resident's wet read: the impression, abbreviated, above the final report
        imp = dict(note.sections).get("IMPRESSION", "")
        wet = " ".join(imp.replace("\n", " ").split())
        for a, b in _WET_ABBREV:
            wet = wet.replace(a, b)
        out.append(f"WET READ: ___ ___ {r.randint(1, 12)}:{r.randint(0, 59):02d} "
                   f"{_pick(r, ['AM', 'PM'])}")
        out.extend("  " + x for x in _wrap(wet, width - 2))
        out.append("_" * 78)
        out.append("")
    for head, body in note.sections:
        if head == "__PRE__":
            for line in body.split("\n"):
                out.extend(_wrap(line, 78) if len(line) > 78 and line[0] != "_" else [line])
            continue
        if r.random() < typo_p / 4 and head in ("FINDINGS", "IMPRESSION", "INDICATION",
                                                 "PROCEDURE DETAILS", "Conclusions"):
            body = _typo(r, body)
        paras = body.split("\n")
        inline = head in ("EXAMINATION", "INDICATION", "TECHNIQUE", "COMPARISON", "DOSE",
                          "OPERATORS", "ANESTHESIA", "MEDICATIONS", "COMPLICATIONS", "CONSENT",
                          "GENERAL COMMENTS", "ESTIMATED BLOOD LOSS", "SPECIMENS",
                          "DISPOSITION", "ATTESTATION", "PRE-PROCEDURE DIAGNOSIS",
                          "POST-PROCEDURE DIAGNOSIS", "FLUOROSCOPY TIME AND DOSE", "CONTRAST",
                          "RECOMMENDATION(S)") and len(paras) == 1
        if inline:
            out.extend(_wrap(f"{head}:  {body}", width))
        else:
            out.append(f"{head}: " if head.isupper() else f"{head}:")
            for para in paras:
                if not para:
                    out.append("")
                    continue
                out.extend(_wrap(para, width))
        out.append("")
    return "\n".join(out).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------


def _check(n_patients: int, prevalence: float, noise: float) -> None:
    if not isinstance(n_patients, int) or n_patients < 1:
        raise ConfigError(f"--patients must be a positive integer (got {n_patients!r})")
    if not 0.0 <= prevalence <= 1.0:
        raise ConfigError(f"--prevalence must be between 0 and 1 (got {prevalence!r})")
    if not 0.0 <= noise <= 1.0:
        raise ConfigError(f"--noise must be between 0 and 1 (got {noise!r})")


def generate_cohort(
    n_patients: int, seed: int, prevalence: float = 0.25, noise: float = 0.0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Generate a synthetic ICU cohort; returns ``(notes, evidence)`` DataFrames.

    ``notes``: one row per note, columns ``patient_id, note_id, charttime, note_type, text,
    label`` (``label`` is ``"true"``/``"false"``), sorted by patient then time. Exactly
    ``round(prevalence * n_patients)`` patients are generated positive; then exactly
    ``round(noise * n_patients)`` randomly chosen labels are flipped (``noise``: label noise,
    text unchanged). ``evidence``: columns ``patient_id, note_id, kind``; see the module doc
    for the kinds. The same arguments always give identical frames.

    Raises :class:`~ards_rag.errors.ConfigError` for ``n_patients < 1`` or a ``prevalence`` or
    ``noise`` outside [0, 1].
    """
    _check(n_patients, prevalence, noise)
    note_rows: list[tuple[str, str, str, str, str, str]] = []
    ev_rows: list[tuple[str, str, str]] = []
    for r, p, label in _draw_patients(n_patients, seed, prevalence, noise):
        pid = p.pid
        notes = _schedule(r, p)
        lab = "true" if label else "false"
        prev: datetime | None = None
        for k, nt in enumerate(notes, 1):
            # strictly increasing times, a few minutes apart at least
            when = p.admit + timedelta(seconds=round(nt.day * 86400))
            if prev is not None and when <= prev:
                when = prev + timedelta(minutes=r.randint(3, 40), seconds=r.randint(0, 59))
            prev = when
            nid = f"{pid}-RR-{k}" if nt.note_type == "Radiology" else (
                f"{pid}-EC-{k}" if nt.note_type == "Echo" else f"{pid}-PR-{k}")
            note_rows.append((pid, nid, _fmt_time(when), nt.note_type, _render(r, nt), lab))
            for kind in dict.fromkeys(nt.kinds):
                if kind.startswith("trap_") == p.positive:
                    continue  # positives list their evidence, negatives their traps
                ev_rows.append((pid, nid, kind))
    notes_df = pd.DataFrame(note_rows, columns=NOTES_COLUMNS)
    ev_df = pd.DataFrame(ev_rows, columns=EVIDENCE_COLUMNS)
    return notes_df, ev_df


def _draw_patients(
    n_patients: int, seed: int, prevalence: float, noise: float
) -> Iterator[tuple[Rng, _Patient, bool]]:
    """The cohort's patients in order: ``(rng, patient, label)``, the rng ready to draw the notes.

    Class, trap and mention assignments come from one cohort rng; each patient has its own rng
    seeded from it, so the notes of one patient never depend on another's."""
    master = random.Random(seed)
    n_pos = round(prevalence * n_patients)
    order = list(range(n_patients))
    master.shuffle(order)
    positive = [False] * n_patients
    for i in order[:n_pos]:
        positive[i] = True
    negatives = [i for i in order[n_pos:]]
    master.shuffle(negatives)
    n_trap = math.ceil(_TRAP_SHARE * len(negatives))
    trapped = set(negatives[:n_trap])
    positives = [i for i in order[:n_pos]]
    master.shuffle(positives)
    mention = set(positives[: round(_POS_MENTION * n_pos)])
    patient_seeds = [master.getrandbits(64) for _ in range(n_patients)]
    # drawn last, so that noise changes labels only, never the text
    flips = set(master.sample(range(n_patients), round(noise * n_patients)))
    width = max(6, len(str(n_patients)))

    for i in range(n_patients):
        r = random.Random(patient_seeds[i])
        p = _make_patient(r, f"P{i + 1:0{width}d}", positive[i], i in trapped, i in mention)
        yield r, p, positive[i] != (i in flips)


def patient_scenarios(
    n_patients: int, seed: int, prevalence: float = 0.25, noise: float = 0.0
) -> pd.DataFrame:
    """What :func:`generate_cohort` with the same arguments makes of each patient, for error
    analysis: ``patient_id, scenario, insult, trapped, mention, label`` (``scenario``: ``ards``
    for positives, else the negative scenario of the module doc, e.g. ``overload_mimic``;
    ``trapped``: the notes carry an ARDS trap; ``label`` after label noise)."""
    _check(n_patients, prevalence, noise)
    rows = [(p.pid, p.scenario, p.insult, bool(p.trap_kinds), p.mention, label)
            for _, p, label in _draw_patients(n_patients, seed, prevalence, noise)]
    return pd.DataFrame(rows, columns=["patient_id", "scenario", "insult", "trapped", "mention", "label"])


def write_cohort(
    out_dir: str | Path,
    n_patients: int,
    seed: int,
    prevalence: float = 0.25,
    noise: float = 0.0,
) -> tuple[Path, Path]:
    """Generate a cohort and write ``out_dir/notes.csv`` and ``out_dir/evidence.csv``.

    The folder is created (parents too); other files in it are left alone. Each file is written
    to a temporary name and renamed into place, so a reader never sees a half-written file.
    Returns the two file paths. Errors as :func:`generate_cohort`.
    """
    notes, evidence = generate_cohort(n_patients, seed, prevalence=prevalence, noise=noise)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder; pass a folder path to --out")
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, df in (("notes.csv", notes), ("evidence.csv", evidence)):
        final = out / name
        tmp = out / f".{name}.tmp-{os.getpid()}"
        try:
            df.to_csv(tmp, index=False)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        paths.append(final)
    return paths[0], paths[1]

