"""An offline rule-based labeler for the 14 CheXpert observations.

Used when CheXbert weights are absent; its F1 table is reported under its own names
(``chexpert_rules_f1_*``), never as CheXbert. It outputs the same four states as CheXbert
(blank, positive, negative, uncertain; class codes of :mod:`bench.metrics.clinical`).

How a report is labelled (our own patterns, written for this harness):

1. The text is lower-cased, whitespace collapsed, split into sentences (``. ! ?``, line
   breaks, numbered-list markers) and each sentence into clauses at ``;`` and at contrastive
   or relative connectors (but, however, although, though, whereas, which, while).
2. *Mentions*: per observation, regular expressions for its names and synonyms
   (``_MENTIONS``). A few patterns carry their own state: statements of normality ("heart
   size is normal") are negative mentions of Cardiomegaly; "borderline", "upper limits of
   normal" make them uncertain.
3. *Cues*: negation and uncertainty cues, each with a direction. Pre-cues ("no", "without",
   "free of", "negative for", "possible", "questionable", "cannot exclude") reach forward to
   the end of their scope; post-cues ("is not seen", "has resolved", "cannot be excluded", "is
   likely") reach back to its start; two-way cues ("possibly", "may", "versus", "suggestive of")
   reach both ways. A cue inside a mention's span applies to it ("the heart is not enlarged").
   A scope is its clause, cut where a new subject starts after a comma or "and"
   (", the heart is ..."). Pseudo-negations ("no change", "not changed", "no increase") are not
   negation cues.
4. Each mention is uncertain if an uncertainty cue reaches it, else negative if a negation cue
   does, else positive. An observation takes the strongest state over its mentions:
   positive > uncertain > negative > blank.
5. No Finding is positive when no other observation except Support Devices is positive or
   uncertain, blank otherwise (as CheXpert/CheXbert).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from bench.metrics.clinical import BLANK, NEGATIVE, NO_FINDING, OBSERVATIONS, POSITIVE, UNCERTAIN

# ----------------------------------------------------------------------------- mention patterns

_AIRSPACE = r"air[- ]?space"
_PLEURAL_EFFUSION = r"(?<!pericardial )(?<!joint )(?<!pericardial)\beffusions?\b"

# A descriptive mention names a finding by its appearance ("nodular opacity", "rounded density"):
# a two-way hedge after it also reaches back to it ("a rounded density may represent a nodule").
DESCRIPTIVE = -100

# observation -> list of (regex, state). State None: from the cues; NEGATIVE / UNCERTAIN: fixed
# (statements of normality, "borderline"); DESCRIPTIVE: from the cues, two-way hedges reach back.
_MENTIONS: dict[str, list[tuple[str, int | None]]] = {
    "Enlarged Cardiomediastinum": [
        (r"\b(widen(ed|ing)|enlarged|prominent)\s+(cardio)?mediastin\w*", None),
        (r"\bmediastinal\s+(widening|enlargement|prominence)", None),
        (
            r"\b(cardio)?mediastin\w*(\s+(silhouette|contours?|shadow))?\s+(is|are|appears?|remains?)\s+"
            r"(\w+\s+)?(widened|enlarged|prominent)",
            None,
        ),
        (
            r"\bcardiomediastinal\s+(silhouette|contours?)\s+(is|are|appears?|remains?)?\s*"
            r"(stable\s+(and\s+)?)?(normal|within normal limits|unremarkable)",
            NEGATIVE,
        ),
        (r"\bnormal\s+(cardio)?mediastinal\s+(silhouette|contours?)", NEGATIVE),
        (r"\bmediastinum\s+(is\s+)?normal\s+in\s+width", NEGATIVE),
    ],
    "Cardiomegaly": [
        (r"\bcardiomegaly\b", None),
        (r"\bcardiac\s+(enlargement|prominence)", None),
        (r"\benlarge(d|ment of the)\s+(heart|cardiac\s+(silhouette|shadow|size|contour))", None),
        (
            r"\b(heart|cardiac\s+(silhouette|shadow|contour|size)|heart\s+size)\b[^.;,]{0,30}?"
            r"\b(enlarged|enlargement|increased|large|prominent)\b",
            None,
        ),
        (
            r"\b(heart|cardiac)(\s+(size|silhouette))?\s+(is\s+|remains\s+|appears\s+)?(at\s+the\s+|near\s+|towards\s+)?"
            r"(upper|high|top)[- ](limits?\s+(of\s+)?)?normal",
            UNCERTAIN,
        ),
        (r"\b(upper|high|top)[- ](limits?\s+(of\s+)?)?normal\s+(heart|cardiac)(\s+size)?", UNCERTAIN),
        (r"\b(heart|cardiac)(\s+size|\s+silhouette)?\s+(is\s+)?borderline", UNCERTAIN),
        (r"\bborderline\s+(heart|cardiac)\s+size", UNCERTAIN),
        (r"\bnormal(-sized|\s+sized)?\s+(heart|cardiac)(\s+size)?\b", NEGATIVE),
        (
            r"\b(heart|cardiac)\b(\s+(size|silhouette|shadow|contours?))?(\s+and\s+[\w ,]{0,40}?)?\s+"
            r"(is\s+|are\s+|appears?\s+|remains?\s+)?(stable\s+(and\s+)?)?(of\s+)?"
            r"(normal|within\s+normal\s+limits|unremarkable)",
            NEGATIVE,
        ),
    ],
    "Lung Opacity": [
        (r"\bopaci(ty|ties|fication|fied)\b", None),
        (r"\binfiltrat(e|es|ion|ive)\b", None),
        (rf"\b{_AIRSPACE}\s+(disease|process)", None),
        (r"\b(haziness|hazy)\b", None),
        (r"\bground[- ]glass\b", None),
        (r"\b(airspace|parenchymal|pulmonary|lung|basilar|basal|perihilar|focal|patchy)\s+densit(y|ies)\b", None),
        (r"\b(increased|prominent|coarse(ned)?)\s+(interstitial|lung|pulmonary|bronchovascular)\s+markings", None),
        (r"\breticula(r|tion)\b", None),
    ],
    "Lung Lesion": [
        (r"(?<!calcified )(?<!calcific )\bnodul(e|es)\b", None),
        (r"(?<!calcified )(?<!calcific )\bnodul(ar|arity)\b", DESCRIPTIVE),
        (r"\bmass(es)?\b(?!\s+effect)", None),
        (r"\b(lung|pulmonary|cavitary|cavitating|focal)\s+lesions?\b", None),
        (r"\bround(ed)?\b(?![\w\s-]{0,25}?\bcalcifi)[\w\s-]{0,25}?\bdensit(y|ies)\b", DESCRIPTIVE),
    ],
    "Edema": [
        (r"(?<!soft tissue )\bedema\b", None),
        (r"\b(vascular|venous|pulmonary|interstitial)\s+congestion\b", None),
        (r"\bcongestive\s+heart\s+failure\b|\bchf\b|\bheart\s+failure\b", None),
        (r"\bfluid\s+overload\b", None),
        (r"\b(pulmonary\s+)?venous\s+(hypertension|engorgement)\b|\bvascular\s+(engorgement|prominence)\b", None),
        (r"\b(increased|prominent)\s+(central\s+)?(pulmonary\s+|lung\s+)?vascular(ity|ature)\b", None),
        (r"\b(vessels|vasculature|vascularity)\s+(is\s+|are\s+)?engorged\b", None),
    ],
    "Consolidation": [
        (r"\bconsolidat(ion|ions|ive|ed|ing)\b", None),
        (r"\bdense\s+air[- ]?space\s+(opaci\w+|disease)\b", None),
    ],
    "Pneumonia": [
        (r"\b(broncho)?pneumonias?\b", None),
        (r"(?<!granulomatous )\binfect(ion|ions|ious)\b", None),
    ],
    "Atelectasis": [
        (r"\batelecta(sis|ses|tic)\b", None),
        (r"(?<!vertebral )(?<!compression )(?<!body )\bcollapse(d)?\b", None),
    ],
    "Pneumothorax": [
        (r"\b(hydro)?pneumothora(x|ces)\b", None),
        (r"\bvisceral\s+pleural\s+lines?\b|\bpleural\s+air(\s+collections?)?\b", None),
    ],
    "Pleural Effusion": [
        (_PLEURAL_EFFUSION, None),
        (r"\bpleural\s+fluid\b", None),
        (r"\bhydro(pneumo)?thorax\b", None),
    ],
    "Pleural Other": [
        (r"\bpleural\s+(thickening|plaques?|scar(ring)?|calcifications?)\b", None),
        (r"\bthickening\s+of\s+the\s+pleura\b", None),
        (r"\bfibrothorax\b", None),
        (r"\bpleural[- ]parenchymal\s+(scar(ring)?|thickening)\b", None),
        (r"\bapical\s+(pleural\s+)?(cap|capping)\b", None),
    ],
    "Fracture": [
        (r"\bfractur(e|es|ed|ing)\b", None),
    ],
    "Support Devices": [
        (
            r"\b(central|venous|picc|arterial|dialysis|subclavian|jugular|ij|swan[- ]ganz|midline)\s+"
            r"(venous\s+)?(line|catheter)s?\b",
            None,
        ),
        (r"\bpicc\b|\bcatheters?\b|\bport[- ]?a[- ]?cath\b|\bpower\s*port\b", None),
        (
            r"\b(endotracheal|et|nasogastric|ng|orogastric|og|feeding|chest|tracheostomy|enteric|dobhoff|gastric|"
            r"thoracostomy)\s+tubes?\b",
            None,
        ),
        (r"\btracheostomy\b", None),
        (r"\bpace(maker|r)s?\b|\bdefibrillator\b|\baicd\b|\b(pacing|pacer)\s+(wires?|leads?)\b", None),
        (r"\b(sternotomy|sternal|cerclage)\s+wires?\b", None),
        (r"\b(surgical|vascular)\s+clips?\b", None),
        (r"\bstents?\b|\bprosthe(sis|tic)\b|\b(fixation|orthopedic|spinal)\s+hardware\b", None),
        (r"\b(valve\s+replacement|mechanical\s+valve)\b", None),
        (
            r"\b(surgical|vascular|mediastinal|hilar)\s+clips?\b|\bcoils?\b|\bstimulators?\b|\bicd\b|\b(gastrostomy|suction|drainage)\s+tubes?\b",
            None,
        ),
        (r"\b(monitor(ing)?|ekg|ecg|cardiac|pacer|pacemaker)\s+(leads?|wires?|devices?)\b|\bleads\b", None),
        (r"\b(lines?\s+and\s+tubes?|tubes?\s+and\s+lines?)\b|\b(electronic|cardiac)\s+device\b", None),
        (r"\btip\s+(is\s+)?(projecting|projects|overl\w+|terminat\w+|in\s+the|at\s+the)\b", None),
    ],
}

# ----------------------------------------------------------------------------- cues

_NEG_PRE = [
    r"\bno\b",
    r"\bnot\b",
    r"\bwithout\b",
    r"\bfree\s+of\b",
    r"\bnegative\s+for\b",
    r"\bclear\s+of\b",
    r"\babsence\s+of\b",
    r"\bnor\b",
    r"\bneither\b",
    r"\bresolution\s+of\b",
    r"\bresolved\b",
    r"\bruled?\s+out\b",
    r"\bremoval\s+of\b",
]
_NEG_POST = [
    r"\bnot\s+(be\s+)?(seen|identified|visualized|present|demonstrated|evident|appreciated|noted|detected|visible|apparent)\b",
    r"\b(has|have)\s+(resolved|cleared|been\s+removed)\b",
    r"\bresolved\b",
    r"\bremoved\b",
    r"\babsent\b",
    r"\bno\s+longer\b",
    r"\bruled\s+out\b",
]
_PSEUDO_NEG = [
    r"\bno\s+(significant\s+|interval\s+|appreciable\s+|substantial\s+|definite\s+)?(change|increase|decrease)\b",
    r"\bnot\s+(significantly\s+)?(changed|increased|decreased)\b",
    r"\bwithout\s+(significant\s+|interval\s+)?(change|increase)\b",
    r"\bnot\s+only\b",
]
# forward-only uncertainty (adjectives, "cannot exclude" + object)
_UNC_PRE = [
    r"\bpossible\b",
    r"\bprobable\b",
    r"\bquestionabl[ey]\b",
    r"\bquestion(\s+of)?\b",
    r"\bsuspect(ed)?\b",
    r"\bsuspicion\s+(of|for)\b",
    r"\bborderline\b",
    r"\bequivocal\b",
    r"\bindeterminate\b",
    r"\buncertain\b",
    r"\bpresum(ed|ably)\b",
    r"\blikely\b",
    r"\b(can\s*not|could\s+not|cannot|not)\s+(exclude|rule\s+out)\b",
    r"\bdifficult\s+to\s+exclude\b",
    r"\bsuggestion\s+of\b",
    r"\bsuggest(s|ive|ing)?\b",
    r"\bconsider(ed|ation)?\b",
]
# both directions; back only to descriptive mentions ("a rounded density may represent a nodule"),
# not to a named finding ("opacity, possibly atelectasis": the opacity is seen)
_UNC_BOTH = [
    r"\bpossibly\b",
    r"\bprobably\b",
    r"\bmay\b",
    r"\bmight\b",
    r"\bcould\b",
    r"\bdifferential\b",
    r"\b(concern(ing)?|suspicious|worrisome)\s+for\b",
    r"\blikely\s+(represent|reflect|due|related)\w*\b",
]
# both directions, to every mention: an alternative ("effusion versus pleural thickening")
_UNC_ALTERNATIVE = [r"\b(versus|vs)\b"]
# backward-only
_UNC_POST = [
    r"\b(can\s*not|could\s+not|cannot|not)\s+(be\s+)?(excluded|ruled\s+out)\b",
    r"\b(is|are)\s+(possible|suspected|questioned|likely|uncertain|not\s+certain)\b",
]

_CLAUSE_SPLIT = re.compile(r";|\s+(?=(?:but|however|although|though|whereas|which|while)\b)")
# a comma or "and" followed by what starts a new clause: ends a cue's scope
_SCOPE_BREAK = re.compile(
    r"(,|\band\b)\s*(and\s+)?(?=(the|there|heart|lungs?|cardiac|mediastin\w*|it|this|these|they|otherwise)\b)"
)
_WITH = re.compile(r"\bwith\b")
_SENT_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
_LIST_MARKER = re.compile(r"(^|\s)\d{1,2}[.)]\s+")


def _compile(patterns: Iterable[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns))


_RE_NEG_PRE = _compile(_NEG_PRE)
_RE_NEG_POST = _compile(_NEG_POST)
_RE_PSEUDO = _compile(_PSEUDO_NEG)
_RE_UNC_PRE = _compile(_UNC_PRE)
_RE_UNC_BOTH = _compile(_UNC_BOTH)
_RE_UNC_ALTERNATIVE = _compile(_UNC_ALTERNATIVE)
_RE_UNC_POST = _compile(_UNC_POST)
_RE_MENTIONS: dict[str, list[tuple[re.Pattern[str], int | None]]] = {
    obs: [(re.compile(p), state) for p, state in rules] for obs, rules in _MENTIONS.items()
}
assert set(_RE_MENTIONS) == set(OBSERVATIONS) - {NO_FINDING}


@dataclass(frozen=True)
class Mention:
    """One matched mention: observation, its text, and the state the cues gave it."""

    observation: str
    text: str
    state: int
    clause: str


# ----------------------------------------------------------------------------- text handling


def normalise(text: str) -> str:
    """Lower case, numbered-list markers to sentence breaks, whitespace collapsed."""
    text = _LIST_MARKER.sub(r"\1. ", text.lower())
    return " ".join(text.split())


def clauses(text: str) -> list[str]:
    """The clauses of a report (see the module docstring)."""
    out = []
    for sentence in _SENT_SPLIT.split(normalise(text)):
        for clause in _CLAUSE_SPLIT.split(sentence):
            clause = clause.strip(" .!?,")
            if clause:
                out.append(clause)
    return out


def _spans(pattern: re.Pattern[str], clause: str) -> list[tuple[int, int]]:
    return [m.span() for m in pattern.finditer(clause)]


def _overlaps(span: tuple[int, int], others: Sequence[tuple[int, int]]) -> bool:
    return any(span[0] < o[1] and o[0] < span[1] for o in others)


class _Scopes:
    """Scope boundaries of one clause."""

    def __init__(self, clause: str) -> None:
        self.n = len(clause)
        self.breaks = [m.start() for m in _SCOPE_BREAK.finditer(clause)]
        # looking back, "with" also starts a new scope: "cardiomegaly with opacities suggesting edema"
        self.back_breaks = sorted(self.breaks + [m.end() for m in _WITH.finditer(clause)])

    def forward_end(self, cue_end: int) -> int:
        return next((b for b in self.breaks if b >= cue_end), self.n)

    def backward_start(self, cue_start: int) -> int:
        return max((b for b in self.back_breaks if b <= cue_start), default=0)


def _reaches(
    cues: Sequence[tuple[int, int]], span: tuple[int, int], scopes: _Scopes, forward: bool, backward: bool
) -> bool:
    start, end = span
    for c_start, c_end in cues:
        if start < c_start < end:  # the cue sits inside the mention ("heart is not enlarged")
            return True
        if forward and c_start <= start and start < scopes.forward_end(c_end):
            return True
        if backward and end <= c_end and start >= scopes.backward_start(c_start):
            return True
    return False


def _clause_mentions(clause: str) -> list[Mention]:
    mentions: list[tuple[str, tuple[int, int], int | None]] = []
    for obs, rules in _RE_MENTIONS.items():
        for pattern, kind in rules:
            mentions.extend((obs, m.span(), kind) for m in pattern.finditer(clause))
    if not mentions:
        return []
    scopes = _Scopes(clause)
    pseudo = _spans(_RE_PSEUDO, clause)
    neg_pre = [s for s in _spans(_RE_NEG_PRE, clause) if not _overlaps(s, pseudo)]
    neg_post = [s for s in _spans(_RE_NEG_POST, clause) if not _overlaps(s, pseudo)]
    unc_pre = _spans(_RE_UNC_PRE, clause)
    unc_both = _spans(_RE_UNC_BOTH, clause)
    unc_alternative = _spans(_RE_UNC_ALTERNATIVE, clause)
    unc_post = _spans(_RE_UNC_POST, clause)
    out = []
    for obs, span, kind in mentions:
        descriptive = kind == DESCRIPTIVE
        fixed = None if descriptive else kind
        uncertain = (
            _reaches(unc_pre, span, scopes, True, False)
            or _reaches(unc_both, span, scopes, True, descriptive)
            or _reaches(unc_alternative, span, scopes, True, True)
            or _reaches(unc_post, span, scopes, False, True)
        )
        if fixed is not None:
            state = UNCERTAIN if (fixed == NEGATIVE and uncertain) else fixed
        elif uncertain:
            state = UNCERTAIN
        elif _reaches(neg_pre, span, scopes, True, False) or _reaches(neg_post, span, scopes, False, True):
            state = NEGATIVE
        else:
            state = POSITIVE
        out.append(Mention(obs, clause[span[0] : span[1]], state, clause))
    return out


def mentions(text: str) -> list[Mention]:
    """Every mention in the report with its state (for inspection and tests)."""
    return [m for clause in clauses(text) for m in _clause_mentions(clause)]


_RANK = {POSITIVE: 3, UNCERTAIN: 2, NEGATIVE: 1, BLANK: 0}


@functools.lru_cache(maxsize=65536)
def _label_tuple(text: str) -> tuple[int, ...]:
    state = dict.fromkeys(OBSERVATIONS, BLANK)
    for m in mentions(text):
        if _RANK[m.state] > _RANK[state[m.observation]]:
            state[m.observation] = m.state
    findings = [o for o in OBSERVATIONS if o not in (NO_FINDING, "Support Devices")]
    state[NO_FINDING] = BLANK if any(state[o] in (POSITIVE, UNCERTAIN) for o in findings) else POSITIVE
    return tuple(state[o] for o in OBSERVATIONS)


def label_report(text: str) -> dict[str, int]:
    """observation -> class code (BLANK, POSITIVE, NEGATIVE, UNCERTAIN) for one report."""
    return dict(zip(OBSERVATIONS, _label_tuple(text or ""), strict=True))


def label_reports(texts: Sequence[str]) -> np.ndarray:
    """[N, 14] class codes in CheXbert's observation order (cached per text)."""
    if not texts:
        return np.zeros((0, len(OBSERVATIONS)), dtype=np.int64)
    return np.array([_label_tuple(t or "") for t in texts], dtype=np.int64)
