"""The prompt texts of the generative protocols (written for medvlbench; recorded in every result).

Placeholders are filled with ``str.format``. Each template puts the variable part on its own line after
a fixed label ("Question:", "Indication:", "Candidates:") so that a reader of the samples file (or a
test server) can find it.
"""

from __future__ import annotations

# --------------------------------------------------------------------------- VQA

VQA_CLOSED = (
    "Look at the medical image and answer the question.\n"
    "Question: {question}\n"
    "Answer yes or no when the question allows it; otherwise answer with one word or a short phrase. "
    "Give only the answer."
)
VQA_OPEN = (
    "Look at the medical image and answer the question.\n"
    "Question: {question}\n"
    "Answer with one word or a short phrase. Give only the answer."
)
VQA_CHOICES = (
    "Look at the medical image and answer the multiple-choice question.\n"
    "Question: {question}\n"
    "Options:\n{options}\n"
    "Give only the text of the correct option."
)

# --------------------------------------------------------------------------- report generation

RRG_IMAGE_ONLY = (
    "Here is a chest X-ray. Write the FINDINGS section of its radiology report: a few sentences of plain "
    "prose describing what the image shows, as a radiologist would dictate them."
)
RRG_WITH_INDICATION = RRG_IMAGE_ONLY + "\nIndication: {indication}"

# --------------------------------------------------------------------------- classification / diagnosis

CLASSIFY_SINGLE = (
    "Which one of the candidate diagnoses below does this {image_kind} show?\n"
    "Candidates: {candidates}\n"
    "Reply with exactly one candidate, written as in the list, and nothing else."
)
CLASSIFY_MULTI = (
    "Which of the candidate findings below are present in this {image_kind}?\n"
    "Candidates: {candidates}\n"
    "Reply with a comma-separated list of every candidate that applies, written as in the list, and nothing else."
)
COT_SINGLE = (
    "Which one of the candidate diagnoses below does this {image_kind} show?\n"
    "Candidates: {candidates}\n"
    "Think step by step first: describe the image features that matter and weigh each candidate against them. "
    "Then end with a last line of the form 'Answer: <one candidate>'."
)
COT_MULTI = (
    "Which of the candidate findings below are present in this {image_kind}?\n"
    "Candidates: {candidates}\n"
    "Think step by step first: describe the image features that matter and weigh each candidate against them. "
    "Then end with a last line of the form 'Answer: <comma-separated list of the candidates that apply>'."
)
CANDIDATE_SEPARATOR = "; "

# --------------------------------------------------------------------------- diagnosis-guided bootstrapping (MedDr)

# Training text from a labelled image: the generator sees the image and its established diagnosis and writes
# findings that agree with it. {present}, {absent}, {uncertain}: comma-separated finding names, "none" when empty.
BOOTSTRAP_FINDINGS = (
    "This {image_kind} belongs to a labelled collection, and experts have already established its diagnosis.\n"
    "Present: {present}\n"
    "Absent: {absent}\n"
    "Uncertain: {uncertain}\n"
    "Write the FINDINGS section of the report for this image: one paragraph of plain prose, as the reading "
    "clinician would dictate it. Describe what the image itself shows, and stay consistent with the established "
    "diagnosis: describe every present finding (where it lies, how large or extensive it looks), state plainly "
    "that each absent finding is not seen, and word each uncertain finding as possible rather than definite. "
    "If the only present finding is No Finding, describe a normal study. Add no abnormality that the diagnosis "
    "does not list, do not mention labels or that a diagnosis was supplied, and give only the paragraph."
)
