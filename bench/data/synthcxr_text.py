"""Report and question-answer text for the synthetic ``synthcxr`` dataset.

All sentences are our own templates. Each statement has several phrasings, chosen with the
image's seeded generator, so a text model cannot learn one fixed sentence per finding. The
canonical lower-case finding name ("pleural effusion", "cardiomegaly", ...) appears in most
positive phrasings; the rest use a recognisable synonym ("enlarged cardiac silhouette").

Label semantics follow report-derived datasets: a positive finding is stated plainly, an
uncertain one (label -1) is hedged ("possible", "cannot be excluded", "may represent"), an
absent one is either negated explicitly ("No pneumothorax.") or not mentioned.

Sides are the patient's (radiological convention: the patient's right is the image's left).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.data.synthcxr_draw import FindingSpec

# lower-case names used in prompts and open answers
NAMES = {
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Consolidation": "consolidation",
    "Edema": "edema",
    "Pleural Effusion": "pleural effusion",
    "Pneumothorax": "pneumothorax",
    "Nodule": "nodule",
}
# noun phrase with its article, for questions
_NP = {
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Consolidation": "consolidation",
    "Edema": "pulmonary edema",
    "Pleural Effusion": "a pleural effusion",
    "Pneumothorax": "a pneumothorax",
    "Nodule": "a nodule",
}
SIZE_FINDINGS = ("Consolidation", "Pleural Effusion", "Pneumothorax", "Nodule")  # small|moderate|large
GRADE_FINDINGS = ("Atelectasis", "Cardiomegaly", "Edema")  # mild|moderate|severe

_T = list[str]


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


def _side_word(f: FindingSpec) -> str:
    return "bilateral" if f.side == "both" else str(f.side)


# ----------------------------------------------------------------------------- locations


def location(f: FindingSpec) -> str:
    """The location string stored in ``meta["location"]`` (and answered to "where" questions)."""
    if f.name in ("Consolidation", "Nodule"):
        return f"{f.side} {f.zone} zone"
    if f.name == "Atelectasis":
        return f"both {f.zone} zones" if f.side == "both" else f"{f.side} {f.zone} zone"
    if f.name == "Pleural Effusion":
        return "both bases" if f.side == "both" else f"{f.side} base"
    if f.name == "Pneumothorax":
        return "both apices" if f.side == "both" else f"{f.side} apex"
    if f.name == "Edema":
        return "bilateral perihilar"
    return "cardiac silhouette"


def side_answer(f: FindingSpec) -> str | None:
    return {"right": "right", "left": "left", "both": "both"}.get(f.side or "")


def _loc_phrase(f: FindingSpec, rng: np.random.Generator) -> str:
    """A prepositional phrase for the finding's place, e.g. "in the right lower zone"."""
    side, zone = f.side, f.zone
    if side == "both":
        if zone == "lower":
            return _pick(rng, ["at both lung bases", "in both lower zones", "at the bases bilaterally"])
        return _pick(rng, [f"in both {zone} zones", f"in the {zone} zones bilaterally"])
    mid = {"upper": "upper", "middle": "mid", "lower": "lower"}[str(zone)]
    options = [f"in the {side} {zone} zone", f"in the {side} {mid} lung", f"in the {mid} {side} lung"]
    if zone == "lower":
        options.append(f"at the {side} lung base")
    if zone == "upper":
        options.append(f"in the {side} upper lobe region")
    return _pick(rng, options)


# ----------------------------------------------------------------------------- severity words


def _sev(f: FindingSpec, rng: np.random.Generator) -> tuple[str, str]:
    """(adjective, adverb) for the finding's severity."""
    s = f.severity
    if f.name == "Nodule":
        adj = {"small": "small", "moderate": "moderate-sized", "large": "large"}[s]
    elif s == "moderate":
        adj = _pick(rng, ["moderate", "moderate-sized"]) if f.name in SIZE_FINDINGS else "moderate"
    elif s == "severe":
        adj = _pick(rng, ["severe", "marked"])
    else:
        adj = s
    adv = {
        "mild": "mildly",
        "moderate": "moderately",
        "severe": "markedly",
        "small": "slightly",
        "large": "markedly",
    }[s]
    return adj, adv


# ----------------------------------------------------------------------------- finding sentences

# {sev}: adjective, {adv}: adverb, {side}: right|left|bilateral, {loc}: place phrase
_POSITIVE: dict[str, _T] = {
    "Cardiomegaly": [
        "{sev} cardiomegaly.",
        "There is {sev} cardiomegaly.",
        "The heart is {adv} enlarged, consistent with cardiomegaly.",
        "The cardiac silhouette is {adv} enlarged.",
        "{sev} enlargement of the cardiac silhouette.",
        "Cardiomegaly, {sev} in degree.",
        "The heart is enlarged, in keeping with {sev} cardiomegaly.",
    ],
    "Consolidation": [
        "{sev} consolidation {loc}.",
        "There is a {sev} area of consolidation {loc}.",
        "Focal consolidation {loc}, {sev} in extent.",
        "Patchy airspace opacity {loc}, consistent with consolidation.",
        "Dense airspace opacity {loc}.",
        "{loc} there is {sev} consolidation.",
        "{sev} airspace consolidation is present {loc}.",
    ],
    "Atelectasis": [
        "{sev} atelectasis {loc}.",
        "There is {sev} atelectasis {loc}.",
        "Linear opacity {loc}, consistent with {sev} atelectasis.",
        "Band-like opacity {loc} compatible with atelectasis.",
        "{sev} volume loss {loc} with atelectatic change.",
        "Subsegmental collapse {loc}.",
        "{sev} {kind} atelectasis {loc}.",
    ],
    "Edema": [
        "{sev} pulmonary edema.",
        "There is {sev} pulmonary edema with perihilar haziness.",
        "Bilateral perihilar opacities and vascular indistinctness, consistent with {sev} pulmonary edema.",
        "{sev} interstitial edema with indistinct pulmonary vessels.",
        "Perihilar haziness with vascular blurring, compatible with {sev} edema.",
        "Findings are consistent with {sev} fluid overload.",
        "{sev} vascular congestion and perihilar haze in keeping with fluid overload.",
    ],
    "Pleural Effusion": [
        "{sev} {side} pleural effusion.",
        "There is a {sev} {side} pleural effusion.",
        "{side} pleural effusion, {sev} in size.",
        "A {sev} {side} pleural effusion obscures the costophrenic angle.",
        "Blunting of the {side} costophrenic angle due to a {sev} effusion.",
        "{sev} {side} pleural fluid collection with a meniscus.",
        "A {sev} {side} pleural effusion layers at the lung base.",
    ],
    "Pneumothorax": [
        "{sev} {side} pneumothorax.",
        "There is a {sev} {side} apical pneumothorax.",
        "A visceral pleural line is seen at the {side} apex, consistent with a {sev} pneumothorax.",
        "{side} pneumothorax, {sev} in size.",
        "{sev} {side} apicolateral pneumothorax with the lung edge displaced from the chest wall.",
        "A {sev} {side} apical lucency is bounded by a thin visceral pleural line.",
    ],
    "Nodule": [
        "There is a {sev} nodule {loc}.",
        "A well-circumscribed {sev} nodule is seen {loc}.",
        "{sev} rounded nodular opacity {loc}.",
        "{sev} pulmonary nodule {loc}.",
        "Round well-defined density {loc}.",
        "A {sev} solitary pulmonary nodule is present {loc}.",
    ],
}
_POSITIVE_BOTH: dict[str, _T] = {
    "Pleural Effusion": [
        "{sev} bilateral pleural effusions.",
        "There are {sev} bilateral pleural effusions.",
        "Bilateral pleural effusions, {sev} in size.",
        "{sev} pleural effusions on both sides.",
        "Both costophrenic angles are blunted by {sev} effusions.",
    ],
    "Pneumothorax": [
        "{sev} pneumothorax on both sides.",
        "Bilateral pneumothorax, {sev} in size.",
        "There are {sev} bilateral pneumothoraces.",
        "{sev} bilateral apical pneumothorax with visible visceral pleural lines.",
    ],
}
_HEDGED: dict[str, _T] = {
    "Cardiomegaly": [
        "The heart size is at the upper limit of normal; mild cardiomegaly cannot be excluded.",
        "Possible mild cardiomegaly.",
        "The cardiac silhouette may be mildly enlarged.",
        "Borderline heart size, questionable cardiomegaly.",
    ],
    "Consolidation": [
        "Subtle opacity {loc}, possibly early consolidation.",
        "Faint opacity {loc}; consolidation cannot be excluded.",
        "Hazy opacity {loc} may represent consolidation.",
        "Questionable small consolidation {loc}.",
    ],
    "Atelectasis": [
        "Minimal linear opacity {loc}, possibly atelectasis.",
        "Faint streaky opacity {loc} may represent atelectasis.",
        "Subtle atelectasis {loc} cannot be excluded.",
    ],
    "Edema": [
        "Mild perihilar haziness, possibly early pulmonary edema.",
        "Slight vascular indistinctness may represent mild edema.",
        "Mild interstitial edema cannot be excluded.",
    ],
    "Pleural Effusion": [
        "Minimal blunting of the {side} costophrenic angle, possibly a trace pleural effusion.",
        "A small {side} pleural effusion cannot be excluded.",
        "Possible small {side} pleural effusion.",
        "Questionable trace {side} pleural effusion.",
    ],
    "Pneumothorax": [
        "Possible small {side} apical pneumothorax.",
        "A tiny {side} apical pneumothorax cannot be excluded.",
        "Faint lucency at the {side} apex may represent a small pneumothorax.",
    ],
    "Nodule": [
        "Possible small nodule {loc}.",
        "A faint rounded density {loc} may represent a nodule.",
        "Questionable nodule {loc}; a nipple shadow cannot be excluded.",
        "Subtle nodular opacity {loc}, possibly a small nodule.",
    ],
}
_NEGATIVE: dict[str, _T] = {
    "Cardiomegaly": [
        "No cardiomegaly.",
        "There is no cardiomegaly.",
        "The heart is not enlarged.",
        "Heart size is normal without cardiomegaly.",
    ],
    "Consolidation": [
        "No focal consolidation.",
        "There is no consolidation.",
        "No airspace consolidation is seen.",
        "No consolidation is identified.",
    ],
    "Atelectasis": ["No atelectasis.", "There is no atelectasis.", "No evidence of atelectasis."],
    "Edema": [
        "No pulmonary edema.",
        "There is no edema.",
        "No evidence of pulmonary edema.",
        "No signs of pulmonary edema.",
    ],
    "Pleural Effusion": [
        "No pleural effusion.",
        "There is no pleural effusion.",
        "No pleural effusion is seen.",
        "The costophrenic angles are sharp, without pleural effusion.",
    ],
    "Pneumothorax": [
        "No pneumothorax.",
        "There is no pneumothorax.",
        "No evidence of pneumothorax.",
        "No pneumothorax is identified.",
    ],
    "Nodule": [
        "No pulmonary nodule is seen.",
        "No suspicious nodule.",
        "No focal nodule or mass.",
        "There is no nodule.",
    ],
}
_NEG_PLEURAL = [
    "No pleural effusion or pneumothorax.",
    "There is no pleural effusion or pneumothorax.",
    "No pneumothorax or pleural effusion is seen.",
]
# chance that an absent finding is negated explicitly in the findings section
_NEGATE_P = {
    "Cardiomegaly": 0.3,
    "Consolidation": 0.5,
    "Atelectasis": 0.2,
    "Edema": 0.35,
    "Pleural Effusion": 0.6,
    "Pneumothorax": 0.6,
    "Nodule": 0.2,
}

_IMPRESSION: dict[str, _T] = {
    "Cardiomegaly": ["{sev} cardiomegaly.", "Cardiomegaly.", "Enlarged cardiac silhouette."],
    "Consolidation": [
        "{sev} consolidation {loc}.",
        "Consolidation {loc}.",
        "Consolidation {loc}, compatible with pneumonia in the appropriate clinical setting.",
    ],
    "Atelectasis": ["{sev} atelectasis {loc}.", "Atelectasis {loc}."],
    "Edema": ["{sev} pulmonary edema.", "Pulmonary edema.", "Findings of {sev} fluid overload."],
    "Pleural Effusion": ["{sev} {side} pleural effusion.", "{side} pleural effusion."],
    "Pneumothorax": ["{sev} {side} pneumothorax.", "{side} pneumothorax."],
    "Nodule": ["{sev} pulmonary nodule {loc}.", "Nodule {loc}; CT is suggested for characterization."],
}
_IMPRESSION_BOTH: dict[str, _T] = {
    "Pleural Effusion": ["{sev} bilateral pleural effusions.", "Bilateral pleural effusions."],
    "Pneumothorax": ["{sev} bilateral pneumothorax.", "Bilateral pneumothoraces."],
}
_IMPRESSION_HEDGED: dict[str, _T] = {
    "Cardiomegaly": [
        "Possible mild cardiomegaly.",
        "Borderline heart size; cardiomegaly cannot be excluded.",
    ],
    "Consolidation": [
        "Possible consolidation {loc}.",
        "Subtle opacity {loc}; early consolidation cannot be excluded.",
    ],
    "Atelectasis": ["Possible atelectasis {loc}."],
    "Edema": ["Possible mild pulmonary edema."],
    "Pleural Effusion": ["Possible small {side} pleural effusion."],
    "Pneumothorax": [
        "Possible small {side} pneumothorax.",
        "A small {side} pneumothorax cannot be excluded.",
    ],
    "Nodule": ["Possible nodule {loc}."],
}
_NORMAL_IMPRESSION = [
    "No acute cardiopulmonary process.",
    "Normal chest radiograph.",
    "No acute cardiopulmonary abnormality.",
    "No radiographic evidence of acute disease.",
]

_HEART_NORMAL = [
    "Heart size is normal.",
    "The cardiac silhouette is normal in size.",
    "The heart is normal in size.",
]
_CARDIOMEDIASTINAL = [
    "The cardiomediastinal silhouette is within normal limits.",
    "Normal cardiomediastinal contours.",
]
_MEDIASTINUM = [
    "The mediastinal contours are unremarkable.",
    "Mediastinal and hilar contours are normal.",
    "The mediastinum is normal in width.",
    "Hilar contours are normal.",
]
_LUNGS_CLEAR = ["The lungs are clear.", "Lungs are well expanded and clear.", "Both lungs are clear."]
_BONES = [
    "No acute osseous abnormality.",
    "The visualized osseous structures are unremarkable.",
    "Bony structures are intact.",
    "Mild degenerative changes of the thoracic spine.",
    "No displaced rib fracture is seen.",
]
_TECHNIQUE = [
    "Frontal view of the chest.",
    "Single upright frontal radiograph of the chest.",
    "PA view of the chest was obtained.",
]
_REASONS = [
    "cough",
    "fever and cough",
    "shortness of breath",
    "chest pain",
    "hypoxia",
    "dyspnea on exertion",
    "productive cough",
    "pleuritic chest pain",
    "central line placement",
    "pre-operative assessment",
    "routine follow-up",
    "fall at home",
    "generalized weakness",
    "tachycardia",
    "low oxygen saturation",
    "wheezing",
    "hemoptysis",
    "new oxygen requirement",
    "post-procedure check",
    "palpitations",
]
_INDICATION = [
    "{age}-year-old {sex} with {reason}.",
    "{Reason}.",
    "{Sex}, {age} years old, {reason}.",
    "History: {reason}. Assess for acute process.",
    "{age} {sex_short} with {reason}; evaluate.",
    "{Reason}. Please assess the chest.",
]
_PARENCHYMA = ("Consolidation", "Atelectasis", "Edema", "Nodule")
_IMPRESSION_ORDER = (
    "Pneumothorax",
    "Pleural Effusion",
    "Consolidation",
    "Edema",
    "Cardiomegaly",
    "Atelectasis",
    "Nodule",
)


def _fill(template: str, f: FindingSpec, rng: np.random.Generator) -> str:
    sev, adv = _sev(f, rng)
    fields: dict[str, Any] = {"sev": sev, "adv": adv, "side": _side_word(f)}
    if "{loc}" in template:
        fields["loc"] = _loc_phrase(f, rng)
    if "{kind}" in template:
        fields["kind"] = "segmental" if f.kind == "wedge" else "plate-like"
    text = template.format(**fields)
    return _cap(text)


def mention(f: FindingSpec, rng: np.random.Generator) -> str:
    """One findings-section sentence stating (or hedging) a present finding."""
    if f.hedged:
        return _fill(_pick(rng, _HEDGED[f.name]), f, rng)
    pool = _POSITIVE_BOTH.get(f.name) if f.side == "both" else None
    return _fill(_pick(rng, pool or _POSITIVE[f.name]), f, rng)


def _impression_line(f: FindingSpec, rng: np.random.Generator) -> str:
    if f.hedged:
        return _fill(_pick(rng, _IMPRESSION_HEDGED[f.name]), f, rng)
    pool = _IMPRESSION_BOTH.get(f.name) if f.side == "both" else None
    return _fill(_pick(rng, pool or _IMPRESSION[f.name]), f, rng)


def indication(rng: np.random.Generator, age: int, sex: str) -> str:
    reason = _pick(rng, _REASONS)
    sex_word = "man" if sex == "M" else "woman"
    text = _pick(rng, _INDICATION).format(
        age=age, sex=sex_word, Sex=_cap(sex_word), sex_short=sex, reason=reason, Reason=_cap(reason)
    )
    return _cap(text)


def write_report(findings: Sequence[FindingSpec], rng: np.random.Generator, age: int, sex: str) -> dict[str, str]:
    """The three report sections for one image."""
    present = {f.name: f for f in findings}
    out: list[str] = []
    if rng.random() < 0.25:
        out.append(_pick(rng, _TECHNIQUE))

    def negate(name: str) -> bool:
        return name not in present and rng.random() < _NEGATE_P[name]

    # heart and mediastinum
    if "Cardiomegaly" in present:
        out.append(mention(present["Cardiomegaly"], rng))
        if rng.random() < 0.6:
            out.append(_pick(rng, _MEDIASTINUM))
    elif negate("Cardiomegaly"):
        out.append(_pick(rng, _NEGATIVE["Cardiomegaly"]))
        if rng.random() < 0.5:
            out.append(_pick(rng, _MEDIASTINUM))
    else:
        roll = rng.random()
        if roll < 0.45:
            out.append(_pick(rng, _CARDIOMEDIASTINAL))
        elif roll < 0.9:
            out.append(_pick(rng, _HEART_NORMAL))
            if rng.random() < 0.6:
                out.append(_pick(rng, _MEDIASTINUM))

    # lungs
    lung_present = [present[n] for n in _PARENCHYMA if n in present]
    order = rng.permutation(len(lung_present))
    out.extend(mention(lung_present[int(k)], rng) for k in order)
    negated = [n for n in _PARENCHYMA if negate(n)]
    if not lung_present and (not negated or rng.random() < 0.5):
        out.append(_pick(rng, _LUNGS_CLEAR))
    elif lung_present and rng.random() < 0.25:
        out.append("The lungs are otherwise clear.")
    out.extend(_pick(rng, _NEGATIVE[n]) for n in negated)

    # pleura
    for name in ("Pleural Effusion", "Pneumothorax"):
        if name in present:
            out.append(mention(present[name], rng))
    neg_eff, neg_ptx = negate("Pleural Effusion"), negate("Pneumothorax")
    if neg_eff and neg_ptx and rng.random() < 0.6:
        out.append(_pick(rng, _NEG_PLEURAL))
    else:
        if neg_eff:
            out.append(_pick(rng, _NEGATIVE["Pleural Effusion"]))
        if neg_ptx:
            out.append(_pick(rng, _NEGATIVE["Pneumothorax"]))

    if rng.random() < 0.6:
        out.append(_pick(rng, _BONES))

    if present:
        ordered = [present[n] for n in _IMPRESSION_ORDER if n in present]
        impression = " ".join(_impression_line(f, rng) for f in ordered)
    else:
        impression = _pick(rng, _NORMAL_IMPRESSION)
    return {"indication": indication(rng, age, sex), "findings": " ".join(out), "impression": impression}


# ----------------------------------------------------------------------------- questions

_Q_PRESENCE = [
    "Is there {np}?",
    "Does the image show {np}?",
    "Is {np} present?",
    "Can {np} be seen on this radiograph?",
    "Is there evidence of {name}?",
    "Does this patient have {np}?",
]
_Q_HEART = ["Is the heart enlarged?", "Is the cardiac silhouette enlarged?"]
_Q_WHERE = [
    "Where is the {name}?",
    "Where is the {name} located?",
    "In which lung zone is the {name}?",
    "What is the location of the {name}?",
]
_Q_SIDE = [
    "Which side is the {name} on?",
    "On which side is the {name}?",
    "Is the {name} on the left, the right, or both sides?",
    "Which hemithorax contains the {name}?",
]
_Q_SIZE = ["How large is the {name}?", "What is the size of the {name}?", "How big is the {name}?"]
_Q_GRADE = ["How severe is the {name}?", "What is the severity of the {name}?", "How marked is the {name}?"]
_Q_WHAT = [
    "What abnormality is seen?",
    "What is the main finding in this image?",
    "Which abnormality does this chest radiograph show?",
    "What abnormality is present?",
]
_Q_ABSENCE = {
    "Cardiomegaly": ["Is the heart size normal?", "Is the cardiac silhouette normal in size?"],
    "Pleural Effusion": ["Are the costophrenic angles sharp?", "Are both costophrenic angles clear?"],
}
_Q_CLEAR = ["Are the lungs clear?", "Are both lung fields clear?"]
_Q_NORMAL = ["Is this chest radiograph normal?", "Is this a normal study?", "Is the chest radiograph normal?"]


def make_qa(
    findings: Sequence[FindingSpec], all_findings: Sequence[str], rng: np.random.Generator
) -> list[dict[str, Any]]:
    """3-5 question-answer pairs consistent with the image's findings.

    Each item has "question", "answer", "answer_type" ("closed" yes/no, "open" otherwise) and,
    for checking and analysis, "finding" (or None) and "kind":

    - closed: "presence" (yes iff the finding is stated present), "absence" ("Is the heart size
      normal?": yes iff absent), "lungs_clear" (no parenchymal finding), "normal" (No Finding);
    - open: "location" (``location(f)``), "side" (left|right|both), "severity" (the finding's
      small|moderate|large or mild|moderate|severe), "abnormality" (the only finding's lower-case
      name, or "none"; asked only when the image has at most one finding).

    Hedged findings are never the subject of a closed question. Yes and no are kept balanced.
    """
    present = {f.name: f for f in findings}
    n_q = int(rng.integers(3, 6))

    def qa(question: str, answer: str, kind: str, finding: str | None) -> dict[str, Any]:
        closed = answer in ("yes", "no")
        return {
            "question": question,
            "answer": answer,
            "answer_type": "closed" if closed else "open",
            "kind": kind,
            "finding": finding,
        }

    open_pool: list[dict[str, Any]] = []
    for f in findings:
        name = NAMES[f.name]
        if f.name in ("Consolidation", "Nodule", "Atelectasis"):
            open_pool.append(qa(_pick(rng, _Q_WHERE).format(name=name), location(f), "location", f.name))
        if f.name in ("Pleural Effusion", "Pneumothorax"):
            open_pool.append(qa(_pick(rng, _Q_SIDE).format(name=name), str(side_answer(f)), "side", f.name))
        grade = _Q_SIZE if f.name in SIZE_FINDINGS else _Q_GRADE
        open_pool.append(qa(_pick(rng, grade).format(name=name), f.severity, "severity", f.name))
    if len(findings) <= 1:
        answer = NAMES[findings[0].name] if findings else "none"
        open_pool.append(qa(_pick(rng, _Q_WHAT), answer, "abnormality", findings[0].name if findings else None))
    open_items = [open_pool[int(k)] for k in rng.permutation(len(open_pool))]

    def presence(name: str, answer: str) -> dict[str, Any]:
        if name == "Cardiomegaly" and rng.random() < 0.4:
            question = _pick(rng, _Q_HEART)
        else:
            question = _cap(_pick(rng, _Q_PRESENCE).format(np=_NP[name], name=NAMES[name]))
        return qa(question, answer, "presence", name)

    # closed questions about present (yes) and absent (no) findings; hedged ones are not asked
    yes_names = [f.name for f in findings if not f.hedged]
    no_names = [n for n in all_findings if n not in present]
    yes_items = [presence(yes_names[int(k)], "yes") for k in rng.permutation(len(yes_names))]
    no_items = [presence(no_names[int(k)], "no") for k in rng.permutation(len(no_names))]
    # questions whose "yes" means normal: the heart size, the costophrenic angles, the lungs
    hedged = any(f.hedged for f in findings)
    extra = []
    for name, templates in _Q_ABSENCE.items():
        if not (name in present and present[name].hedged) and rng.random() < 0.3:
            extra.append(qa(_pick(rng, templates), "no" if name in present else "yes", "absence", name))
    if not hedged and rng.random() < 0.3:
        clear = not any(n in present for n in _PARENCHYMA)
        extra.append(qa(_pick(rng, _Q_CLEAR), "yes" if clear else "no", "lungs_clear", None))
    if not hedged and rng.random() < 0.3:
        extra.append(qa(_pick(rng, _Q_NORMAL), "no" if findings else "yes", "normal", None))
    for item in extra:
        (yes_items if item["answer"] == "yes" else no_items).insert(int(rng.integers(0, 2)), item)

    # fill the slots keeping yes and no balanced; open questions fill in when "yes" runs out
    items: list[dict[str, Any]] = []
    n_yes = n_no = 0
    while len(items) < n_q and (yes_items or no_items or open_items):
        if yes_items and n_yes <= n_no:
            items.append(yes_items.pop(0))
            n_yes += 1
        elif open_items and (rng.random() < 0.5 or not (yes_items or no_items) or n_no > n_yes):
            items.append(open_items.pop(0))
        elif no_items:
            items.append(no_items.pop(0))
            n_no += 1
        else:
            items.append(yes_items.pop(0))
            n_yes += 1
    order = rng.permutation(len(items))
    return [items[int(k)] for k in order]
