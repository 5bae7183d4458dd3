"""Report sectioning (bench.data.report_sections): MIMIC-CXR-style texts, synonyms, fallbacks."""

from __future__ import annotations

import pytest

from bench.data.report_sections import clean_text, find_sections, normalise_header, split_sections
from tests.real_reports import require_iu_reports

MIMIC_REPORT = "".join(
    line + "\n"
    for line in (
        "                                 FINAL REPORT",
        " EXAMINATION:  CHEST (PA AND LAT)",
        " ",
        " INDICATION:  ___F with new onset ascites  // eval for infection",
        " ",
        " TECHNIQUE:  Chest PA and lateral",
        " ",
        " COMPARISON:  None.",
        " ",
        " FINDINGS: ",
        " ",
        " There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral",
        " nodular opacities that most likely represent nipple shadows.",
        " ",
        " IMPRESSION: ",
        " ",
        " No acute cardiopulmonary process.",
    )
)


def test_mimic_report_sections_and_cleaning():
    out = split_sections(MIMIC_REPORT)
    assert out == {
        "examination": "CHEST (PA AND LAT)",
        "indication": "___F with new onset ascites // eval for infection",
        "technique": "Chest PA and lateral",
        "comparison": "None.",
        "findings": "There is no focal consolidation, pleural effusion or pneumothorax. Bilateral nodular "
        "opacities that most likely represent nipple shadows.",
        "impression": "No acute cardiopulmonary process.",
    }
    raw = split_sections(MIMIC_REPORT, clean=False)
    assert "Bilateral\n nodular" in raw["findings"]  # original line break kept
    names = [s.name for s in find_sections(MIMIC_REPORT)]
    assert names == ["preamble", "examination", "indication", "technique", "comparison", "findings", "impression"]


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("CONCLUSION", "impression"),
        ("FINDINGS AND IMPRESSION", "impression"),
        ("FINDINGS/IMPRESSION", "impression"),
        ("IMPRESSON", "impression"),  # misspelling in MIMIC-CXR
        ("FINDNGS", "findings"),
        ("INDICATION", "indication"),
        ("HISTORY", "indication"),
        ("CLINICAL HISTORY", "indication"),
        ("REASON FOR EXAM", "indication"),
        ("REASON FOR EXAMINATION", "indication"),
        ("COMPARISONS", "comparison"),
        ("COMPARISON", "comparison"),
        ("PA AND LATERAL VIEWS OF THE CHEST", "findings"),
        ("NOTIFICATION", "notification"),
        ("WET READ", "wet read"),
        ("SOMETHING ELSE", "something else"),
    ],
)
def test_header_synonyms(header, name):
    assert normalise_header(header) == name


def test_conclusion_and_combined_header_become_impression():
    text = "FINAL REPORT\n HISTORY:  Fever.\n FINDINGS AND IMPRESSION:  Small left effusion.\n"
    assert split_sections(text) == {"indication": "Fever.", "impression": "Small left effusion."}
    assert split_sections(" CONCLUSION: Cardiomegaly.") == {"impression": "Cardiomegaly."}


def test_empty_sections_dropped_and_last_non_empty_wins():
    text = (
        "FINAL REPORT\n FINDINGS:\n \n IMPRESSION:  First impression.\n"
        " ADDENDUM:  late note\n IMPRESSION:  Revised impression.\n FINDINGS:  \n"
    )
    out = split_sections(text)
    assert out == {"impression": "Revised impression.", "addendum": "late note"}
    assert "findings" not in out


def test_fallback_last_paragraph_becomes_impression():
    text = (
        "                                 FINAL REPORT\n CHEST RADIOGRAPH PERFORMED ON ___\n \n"
        " COMPARISON:  Prior exam from ___.\n \n CLINICAL HISTORY:  Chest pain.\n \n"
        " PA and lateral views of the chest were provided.\n \n The lungs are clear.  No effusion.\n"
    )
    out = split_sections(text)
    assert out["indication"] == "Chest pain."
    assert out["impression"] == "PA and lateral views of the chest were provided. The lungs are clear. No effusion."
    assert split_sections(text, fallback=False) == {
        "comparison": "Prior exam from ___.",
        "indication": "Chest pain. PA and lateral views of the chest were provided. The lungs are clear. No effusion.",
    }


def test_report_without_any_header_is_one_impression():
    assert split_sections("The heart is normal.\nLungs clear.") == {"impression": "The heart is normal. Lungs clear."}
    assert split_sections("   ") == {}
    with pytest.raises(TypeError):
        split_sections(None)  # type: ignore[arg-type]


def test_header_needs_newline_and_space_and_colon():
    # "ET tube:" is lower case, "NOTE" has no colon: neither is a header
    text = "FINAL REPORT\n FINDINGS:  ET tube: in place. NOTE tip above carina.\n IMPRESSION:  Lines ok."
    assert split_sections(text) == {"findings": "ET tube: in place. NOTE tip above carina.", "impression": "Lines ok."}
    # a header in the middle of a line is not a header
    assert split_sections("FINDINGS: see IMPRESSION: none")["findings"] == "see IMPRESSION: none"


def test_windows_line_endings():
    assert split_sections("FINAL REPORT\r\n FINDINGS:  Clear.\r\n IMPRESSION:  Normal.\r\n") == {
        "findings": "Clear.",
        "impression": "Normal.",
    }


def test_real_iu_reports_round_trip():
    """Real report text (Open-I, from the torchxrayvision wheel) written in MIMIC layout splits back exactly."""
    reports = require_iu_reports()
    checked = 0
    for rep in reports:
        secs = {
            k: v for k, v in rep.sections.items() if v and k in ("comparison", "indication", "findings", "impression")
        }
        if "findings" not in secs or "impression" not in secs:
            continue
        text = "                                 FINAL REPORT\n" + "".join(
            f" {name.upper()}:  {value}\n \n" for name, value in secs.items()
        )
        assert split_sections(text) == {k: clean_text(v) for k, v in secs.items()}, rep.id
        checked += 1
    assert checked > 2000
