"""Splitting free-text radiology reports into named sections (shared by the report readers).

MIMIC-CXR reports are plain text with upper-case headers, each on a new line that starts with a
space::

                                     FINAL REPORT
     EXAMINATION:  CHEST (PA AND LAT)
     INDICATION:  ___ with cough
     FINDINGS:
     The lungs are clear. ...
     IMPRESSION:
     No acute cardiopulmonary process.

The rules follow the published MIMIC-CXR sectioning (the ``section_parser`` of the MIMIC-CXR code
repository), re-implemented here:

- a header is ``\\n ([A-Z ()/,-]+):\\s`` — upper-case words (spaces, brackets, ``/``, ``,``, ``-``)
  after a newline and one space, followed by a colon and white space. The search for the next
  header resumes after the first line break that follows a header, so a header's own line is
  never split;
- header names are normalised (``CONCLUSION`` → impression, ``FINDINGS AND IMPRESSION`` →
  impression, ``HISTORY`` / ``CLINICAL HISTORY`` / ``REASON FOR EXAM`` → indication,
  ``COMPARISONS`` → comparison, misspellings such as ``IMPRESSON`` → impression, view
  descriptions such as ``PA AND LATERAL`` → findings);
- empty sections are dropped; when a name occurs twice the **last** non-empty one wins (as the
  official extraction does);
- when a report has neither a findings nor an impression section, the paragraphs after the first
  one of its last section become the impression (the official "last paragraph" rule); a report
  with no header at all becomes one impression.

Section texts are returned with white space collapsed to single spaces (``clean=False`` keeps the
original text, stripped). Everything here is pure string handling: no file access, no pandas.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

HEADER = re.compile(r"\n ([A-Z ()/,-]+):\s")
PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")

# exact (lower-case) header names → canonical section name
SYNONYMS: dict[str, str] = {
    "impression": "impression",
    "impressions": "impression",
    "conclusion": "impression",
    "conclusions": "impression",
    "findings and impression": "impression",
    "findings/impression": "impression",
    "findings / impression": "impression",
    "findings/ impression": "impression",
    "impression and findings": "impression",
    "summary": "impression",
    "opinion": "impression",
    "findings": "findings",
    "finding": "findings",
    "reference findings": "findings",
    "indication": "indication",
    "indications": "indication",
    "clinical indication": "indication",
    "history": "indication",
    "clinical history": "indication",
    "patient history": "indication",
    "clinical information": "indication",
    "reason for exam": "indication",
    "reason for examination": "indication",
    "reason for study": "indication",
    "pfi": "indication",
    "comparison": "comparison",
    "comparisons": "comparison",
    "comparison exam": "comparison",
    "comparison film": "comparison",
    "comparison study": "comparison",
    "reference exam": "comparison",
    "prior": "comparison",
    "technique": "technique",
    "examination": "examination",
    "exam": "examination",
    "type of examination": "examination",
    "study": "examination",
    "recommendation": "recommendations",
    "recommendations": "recommendations",
    "recommendation(s)": "recommendations",
    "notification": "notification",
    "addendum": "addendum",
    "wet read": "wet read",
    "wetread": "wet read",
}

# substrings tried in order when the exact table has no entry
_CONTAINS: tuple[tuple[str, str], ...] = (
    ("impression", "impression"),
    ("conclusion", "impression"),
    ("findings", "findings"),
    ("indication", "indication"),
    ("history", "indication"),
    ("reason for", "indication"),
    ("comparison", "comparison"),
    ("technique", "technique"),
    ("addendum", "addendum"),
    ("recommendation", "recommendations"),
    ("examination", "examination"),
)

# headers that describe the views of the study: the text after them is the findings
_VIEW_WORDS = re.compile(
    r"\b(chest|portable|pa and lat|lateral and pa|ap and lat|lateral and ap|frontal and|two views|"
    r"frontal view|pa view|ap view|one view|lateral view|frontal upright|frontal semi-upright|bone window|ribs)"
)

# single-word names that misspellings are matched against
_FUZZY_TARGETS = ("impression", "findings", "indication", "comparison", "conclusion", "technique", "history")


@dataclass(frozen=True)
class Section:
    """One header and its text, in report order."""

    name: str  # canonical lower-case name ("preamble" before the first header)
    header: str  # the header as written ("" for the preamble and fallbacks)
    text: str


def normalise_header(header: str) -> str:
    """The canonical lower-case section name of a header (``"CLINICAL HISTORY"`` → ``"indication"``)."""
    name = " ".join(header.lower().split())
    if name in SYNONYMS:
        return SYNONYMS[name]
    for needle, canonical in _CONTAINS:
        if needle in name:
            return canonical
    if " " not in name and len(name) >= 6:
        close = difflib.get_close_matches(name, _FUZZY_TARGETS, n=1, cutoff=0.8)
        if close:
            return SYNONYMS.get(close[0], close[0])
    if _VIEW_WORDS.search(name):
        return "findings"
    return name


def find_sections(text: str) -> list[Section]:
    """The report cut at its headers (raw texts, names normalised), the preamble first.

    A report without any header is one section named ``"full report"``.
    """
    # a header at the very start of the text has no newline before it: add one (and a space)
    padded = "\n" + text if text.startswith(" ") else "\n " + text
    match = HEADER.search(padded)
    if match is None:
        return [Section("full report", "", text)]
    sections = [Section("preamble", "", padded[: match.start()].strip("\n"))]
    while match is not None:
        header = match.group(1)
        start = match.end()
        newline = padded.find("\n", start)
        resume = start if newline == -1 else newline
        following = HEADER.search(padded, resume)
        end = len(padded) if following is None else following.start()
        sections.append(Section(normalise_header(header), header.strip(), padded[start:end]))
        match = following
    return sections


def clean_text(text: str) -> str:
    """White space (line breaks, the leading spaces of MIMIC lines) collapsed to single spaces."""
    return " ".join(text.split())


def split_sections(text: str, *, clean: bool = True, fallback: bool = True) -> dict[str, str]:
    """``{"findings": ..., "impression": ..., "indication": ..., ...}`` of one report.

    Empty sections and the preamble are dropped; a repeated name keeps its last non-empty text.
    ``fallback``: without findings and impression, the paragraphs after the first one of the last
    section (or the whole text of a report without headers) become the impression.
    """
    if not isinstance(text, str):
        raise TypeError(f"a report must be a string, got {type(text).__name__}")
    sections = find_sections(text.replace("\r\n", "\n").replace("\r", "\n"))
    out: dict[str, str] = {}
    for sec in sections:
        if sec.name in ("preamble", "full report") or not sec.text.strip():
            continue
        out[sec.name] = sec.text.strip()
    if fallback and "findings" not in out and "impression" not in out:
        last = sections[-1]
        paragraphs = [p for p in PARAGRAPH_BREAK.split(last.text) if p.strip()]
        if len(paragraphs) >= 2:
            first, rest = paragraphs[0], "\n \n".join(paragraphs[1:])
            out["impression"] = rest.strip()
            if last.name not in ("preamble", "full report"):
                out[last.name] = first.strip()
        elif last.name == "full report" and text.strip():
            out["impression"] = text.strip()
    if clean:
        out = {k: clean_text(v) for k, v in out.items()}
    return {k: v for k, v in out.items() if v}
