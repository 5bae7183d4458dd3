"""The leaderboard site and the per-run reports, built from runs the test suite produces (``bench_runs``)
plus the papers' reported numbers: the HTML is checked structurally, the exports against the result files,
the mapping of the reported numbers cell by cell, and a real headless Chromium loads the pages (sorting,
filtering, tabs, model output that must stay text) and takes the screenshot.

``BENCH_SCREENSHOT=PATH`` (``make docs-screenshot``) also writes the screenshot of the index to PATH.
"""

from __future__ import annotations

import csv
import json
import os
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from leaderboard import reported as R
from reports.io import iter_samples, read_results
from reports.run_report import render_run_report
from tests.chromium import Browser, require_chromium
from tests.conftest import XSS_ANSWER, XSS_RUN_ID, run_bench

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class StructureCheck(HTMLParser):
    """Every element closed in order, ids unique, local links and sources collected, table rows as wide as
    their header row."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.tables: list[dict] = []
        self.scripts: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            if a["id"] in self.ids:
                self.errors.append(f"duplicate id {a['id']}")
            self.ids.add(a["id"])
        for key in ("href", "src"):
            if a.get(key):
                self.links.append(a[key])
        if tag == "script":
            self.scripts.append(a.get("src") or "(inline)")
        if tag == "table":
            self.tables.append({"header": 0, "rows": [], "section": None})
        elif self.tables and tag in ("thead", "tbody"):
            self.tables[-1]["section"] = tag
        elif self.tables and tag == "tr" and self.tables[-1]["section"] == "tbody":
            self.tables[-1]["rows"].append(0)
        elif self.tables and tag in ("th", "td"):
            t = self.tables[-1]
            if t["section"] == "thead":
                t["header"] += 1
            elif t["rows"]:
                t["rows"][-1] += 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else 'nothing'}>")
            return
        self.stack.pop()


def check_page(path: Path) -> StructureCheck:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!doctype html>")
    checker = StructureCheck()
    checker.feed(text)
    checker.close()
    assert checker.errors == [] and checker.stack == [], (path, checker.errors[:5], checker.stack)
    for link in checker.links:
        assert not link.startswith(("http:", "https:", "//")), f"{path}: external resource {link}"  # no CDN
        target = link.split("#")[0]
        if target:
            assert (path.parent / target).is_file(), f"{path}: broken link {link}"
    for t in checker.tables:
        assert t["header"] and all(n == t["header"] for n in t["rows"]), (path, t["header"], set(t["rows"]))
    assert checker.scripts == [s for s in checker.scripts if s.endswith("bench.js")]  # no inline script
    return checker


@pytest.fixture(scope="module")
def site(bench_runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site") / "site"
    res = run_bench(
        "leaderboard",
        str(bench_runs["folder"]),
        "--output",
        str(out),
        "--reported",
        "--title",
        "medvlbench <test runs>",
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(out / "index.html")
    return out


def _json_table(site: Path, name: str) -> dict:
    return json.loads((site / "tables" / f"{name}.json").read_text())


# --------------------------------------------------------------------------- the site


def test_site_is_well_formed_static_html(site):
    index = check_page(site / "index.html")
    html = (site / "index.html").read_text()
    assert "<title>medvlbench &lt;test runs&gt;</title>" in html
    titles = ["Zero-shot", "Fine-tune", "Grounding", "Retrieval", "VQA", "Report generation", "CheXprompt", "Diagnosis"]
    positions = [html.index(f'role="tab">{t} <span') for t in titles]
    assert positions == sorted(positions)
    pages = sorted((site / "runs").glob("*/index.html"))
    assert len(pages) == 8
    for page in pages:
        check_page(page)
    assert (site / "static" / "bench.js").is_file() and oct((site / "index.html").stat().st_mode)[-3:] == "644"
    tables = ("synthcxr_zs", "synthcxr_zs_5class", "synthcxr_retrieval", "synthcxr_grounding", "synthcxr_diag")
    tables += ("synthcxr_vqa", "vqarad_vqa", "chexpert_zs", "mimic_rrg")
    assert {f"b-{t}" for t in tables} <= index.ids
    # registered tasks without results are listed in their tab
    assert "<code>synthcxr_ft_1pct</code> (synthcxr): " in html  # implemented, no run here


def test_tables_rank_flag_and_export_the_results(site, bench_runs):
    table = _json_table(site, "synthcxr_zs")
    rows = {r["run_id"]: r for r in table["rows"]}
    assert set(rows) == {"clip-base", "clip-noisy", "clip-degraded", "clip-limit100"}
    for name, run_id in (("base", "clip-base"), ("degraded", "clip-degraded"), ("limited", "clip-limit100")):
        res = read_results(bench_runs[name])
        auc = res["tasks"]["synthcxr_zs"]["metrics"]["AUC"]
        assert rows[run_id]["AUC"] == auc["value"] and rows[run_id]["AUC ci95 low"] == auc["ci95"][0]
        assert (
            rows[run_id]["parameters"] == res["model"]["parameters"]
            and rows[run_id]["n"] == (res["tasks"]["synthcxr_zs"]["n_samples"])
        )
    assert not rows["clip-limit100"]["ranked"] and "--limit 100" in rows["clip-limit100"]["flags"]
    assert all(rows[r]["ranked"] for r in ("clip-base", "clip-noisy", "clip-degraded"))
    assert [r["run_id"] for r in table["rows"]][-1] == "clip-limit100"  # flagged rows last
    # best bold and second underlined among ranked rows, in the page
    html = (site / "index.html").read_text()
    section = html[html.index('id="b-synthcxr_zs"') : html.index('id="b-synthcxr_zs_5class"')]
    ranked = sorted((rows[r]["AUC"], r) for r in ("clip-base", "clip-noisy", "clip-degraded"))
    assert f'<td class="num best" data-value="{ranked[-1][0]}"' in section
    assert f'<td class="num second" data-value="{ranked[-2][0]}"' in section
    assert f'<td class="num" data-value="{ranked[0][0]}"' in section  # the degraded model: neither
    with open(site / "tables" / "synthcxr_zs.csv", newline="") as fh:
        csv_rows = list(csv.DictReader(fh))
    assert [r["run_id"] for r in csv_rows] == [r["run_id"] for r in table["rows"]]
    assert float(csv_rows[0]["AUC"]) == table["rows"][0]["AUC"]
    # the generative run lacks METEOR here (no Java) or has it: either way nothing is silently ranked
    gen = _json_table(site, "synthcxr_vqa")["rows"][0]
    assert not gen["ranked"] and gen["run_id"] == XSS_RUN_ID and "--limit 12" in gen["flags"]
    for name in ("synthcxr_zs-per-class-auc", "synthcxr_grounding-per-category-cnr", "synthcxr_zs-parameters"):
        svg = (site / "plots" / f"{name}.svg").read_text()
        assert ET.fromstring(svg).tag.endswith("svg")
    assert "Cardiomegaly" in (site / "plots" / "synthcxr_zs-per-class-auc.svg").read_text()


def test_reported_rows_sit_beside_measured_ones_on_one_scale(site):
    chexpert = {(r["model"], r["tables"]): r for r in _json_table(site, "chexpert_zs")["rows"]}
    radz = chexpert[("LLaVA-RadZ", "Table 1")]
    assert radz["kind"] == "reported" and radz["source"] == "LLaVA-RadZ, Table 1"
    assert radz["AUC"] == pytest.approx(0.7336) and radz["ACC"] == pytest.approx(0.8215)  # printed 73.36, 82.15 %
    html = (site / "index.html").read_text()
    assert 'title="as printed: 73.36 %, shown on a 0–1 scale (LLaVA-RadZ, Table 1, AUC)"' in html
    mimic = _json_table(site, "mimic_rrg")
    rad = next(r for r in mimic["rows"] if r["model"] == "LLaVA-Rad")
    assert rad["chexbert_f1_micro_14_uncneg"] == pytest.approx(0.573) and rad["sacrebleu"] == pytest.approx(15.4)
    meddr = next(r for r in mimic["rows"] if r["model"] == "MedDr")
    assert meddr["bleu1"] == pytest.approx(0.322) and meddr["ROUGE-1 (reported only)"] is not None
    assert {c["key"]: c["higher_is_better"] for c in mimic["columns"]}["radcliq_v1"] is False
    # a dataset without a harness task keeps its own reported-only table
    blood = _json_table(site, "reported-Blood-MNIST-diagnosis")
    assert blood["family"] == "diagnosis" and all(r["kind"] == "reported" for r in blood["rows"])
    # the synthetic benchmark has measured rows only
    assert {r["kind"] for r in _json_table(site, "synthcxr_zs")["rows"]} == {"measured"}


def test_every_reported_number_is_mapped_explicitly():
    from bench.plugins import registry

    reg = registry()
    cells = R.load_reported()
    rows = [row for path in R.reported_files() for row, _ in R.read_csv(path)]
    assert len(rows) == 318 + 416 + 420 + 276  # the README's row counts
    assert len(cells) == sum(1 for r in rows if r["task"] != "ablation")
    for cell in cells:
        if cell.benchmark.startswith("reported:"):
            continue
        assert cell.benchmark in reg.tasks, cell
        base = cell.column.split(R.CATEGORY_SEPARATOR)[0]
        assert (base in reg.metrics) == cell.harness_metric, cell
        if cell.harness_metric:
            assert reg.metrics[base].higher_is_better == cell.higher_is_better, cell
    # the printed scales in PRINTED_SCALE agree with the numbers: percentages exceed 1 in every table,
    # fractions never do
    by_table: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        if row["value"] and row["metric"] not in R.UNITLESS:
            by_table.setdefault((row["paper"], row["table"]), []).append(float(row["value"]))
    for (paper, table), values in by_table.items():
        if R.PRINTED_SCALE[paper] == R.PERCENT:
            assert max(values) > 1 and max(values) <= 100, (paper, table)
        else:
            assert max(values) <= 1, (paper, table)
    # one conversion of each kind
    row = dict.fromkeys(R.COLUMNS, "")
    row.update(paper="llava_rad", table="T", model="M", dataset="MIMIC-CXR", task="report_generation")
    row.update(
        higher_is_better="true", setting="uncertain as positive, macro-avg", metric="CheXbert F1-5", value="47.7"
    )
    cell = R.map_row(row, "here")
    assert cell.benchmark == "mimic_rrg" and cell.column == "chexbert_f1_macro_5_uncpos"
    assert cell.value == pytest.approx(0.477) and cell.setting == ""
    row.update(paper="llava_radz", dataset="RSNA Pneumonia", task="finetune_classification", setting="10%",
               metric="AUC", value="88.5")  # fmt: skip
    assert (R.map_row(row, "here").benchmark, R.map_row(row, "here").value) == ("rsna_ft_10pct", pytest.approx(0.885))
    row.update(paper="lgdea", dataset="MS-CXR", task="phrase_grounding", setting="single domain, Edema",
               metric="CNR", value="1.0928")  # fmt: skip
    cell = R.map_row(row, "here")
    assert (cell.column, cell.value, cell.setting) == ("CNR · Edema", 1.0928, "single domain")


# --------------------------------------------------------------------------- per-run reports


def test_run_report_breakdowns_and_confusion_matrix(bench_runs, tmp_path):
    page = render_run_report(bench_runs["base"], tmp_path / "base")
    check_page(page)
    html = page.read_text()
    res = read_results(bench_runs["base"])
    records = list(iter_samples(bench_runs["base"] / "samples" / "synthcxr_zs_5class.jsonl"))
    classes = res["tasks"]["synthcxr_zs_5class"]["config"]["classes"]
    # the confusion matrix, counted independently from the records
    predicted = [max(classes, key=lambda c, r=r: r["prediction"][c]) for r in records]
    diagonal = sum(p == r["reference"] for p, r in zip(predicted, records))
    assert diagonal / len(records) == pytest.approx(res["tasks"]["synthcxr_zs_5class"]["metrics"]["ACC"]["value"])
    cardio = sum(1 for p, r in zip(predicted, records) if r["reference"] == "Cardiomegaly" and p == "Cardiomegaly")
    section = html[html.index('id="task-synthcxr_zs_5class"') :]
    confusion = section[section.index("Confusion matrix") : section.index("Task configuration")]
    assert "<tr><th>Cardiomegaly</th>" in confusion and f'<td class="num">{cardio}</td>' in confusion
    auc = res["tasks"]["synthcxr_zs"]["metrics"]["AUC"]
    assert f"{auc['per_class']['Edema']:.4f}" in html and f"[{auc['ci95'][0]:.4f}, {auc['ci95'][1]:.4f}]" in html
    assert html.count('<img src="img/') >= 50  # synthetic samples: thumbnails shown by default


def test_samples_of_real_datasets_need_include_samples(site, bench_runs, tmp_path):
    from bench.cli import cli
    from leaderboard.site import build_site

    # the site was built without --include-samples: VQA-RAD (read from local files) is not embedded
    hidden = (site / "runs" / "stub-vqarad" / "index.html").read_text()
    assert "samples of dataset vqa_rad are not shown" in hidden and "--include-samples" in hidden
    assert "Is the heart enlarged?" not in hidden and "<img src=" not in hidden
    shown = render_run_report(bench_runs["vqarad"], tmp_path / "shown", include_samples=True).read_text()
    assert "Is the heart enlarged?" in shown and '<img src="img/' in shown
    index = build_site([bench_runs["vqarad"]], tmp_path / "site2", include_samples=True)
    assert "Is the heart enlarged?" in (index.parent / "runs" / "stub-vqarad" / "index.html").read_text()
    ctx = cli.commands["leaderboard"].make_context("leaderboard", ["runs", "--output", "s", "--include-samples"])
    assert ctx.params["include_samples"] is True


def test_leaderboard_input_errors(tmp_path):
    from bench.interfaces import BenchError
    from leaderboard.site import build_site

    res = run_bench("leaderboard", str(tmp_path / "nope"), "--output", str(tmp_path / "s"))
    assert res.returncode == 2 and res.stderr.startswith("error: ") and "no such folder" in res.stderr
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchError, match="no results found"):
        build_site([tmp_path / "empty"], tmp_path / "s")
    (tmp_path / "empty" / "bad").mkdir()
    (tmp_path / "empty" / "bad" / "results.json").write_text("{}")
    with pytest.raises(BenchError, match=r"bad/results\.json"):
        build_site([tmp_path / "empty"], tmp_path / "s")


# --------------------------------------------------------------------------- a real browser


def _screenshot_targets(tmp_path: Path) -> list[Path]:
    targets = [Path(os.environ.get("BENCH_TEST_ARTIFACTS", tmp_path)) / "leaderboard-index.png"]
    if os.environ.get("BENCH_SCREENSHOT"):
        targets.append(Path(os.environ["BENCH_SCREENSHOT"]))
    return targets


def _order(browser: Browser, table: str) -> list[str]:
    return browser.evaluate(
        f"Array.from(document.querySelectorAll('{table} tbody tr')).map(r => r.cells[1].textContent.trim())"
    )


def test_browser_sorts_filters_and_keeps_model_output_as_text(site, tmp_path):
    from PIL import Image

    browser = Browser(require_chromium())
    with browser:
        browser.open((site / "index.html").as_uri())
        assert browser.evaluate("document.title") == "medvlbench <test runs>"
        shot = browser.screenshot(tmp_path / "raw.png")  # the index as it opens: the zero-shot tab
        zs = "table[data-benchmark=synthcxr_zs]"
        before = _order(browser, zs)
        values = browser.evaluate(
            f"Array.from(document.querySelectorAll('{zs} tbody tr')).map(r => "
            "parseFloat(r.querySelector('td[data-value]').getAttribute('data-value')))"
        )
        # a click on the AUC header sorts best first, a second click reverses
        browser.click(f"{zs} th[data-metric=AUC]")
        first = _order(browser, zs)
        browser.click(f"{zs} th[data-metric=AUC]")
        second = _order(browser, zs)
        by_value = [name for _, name in sorted(zip(values, before), reverse=True)]
        assert first == by_value and second == by_value[::-1] and second != before, (before, first, second)
        assert browser.evaluate(f"document.querySelector('{zs} th[data-metric=AUC]').getAttribute('aria-sort')") == (
            "ascending"
        )
        # the filter box hides the rows that do not match, in every table
        browser.type_text("#filter", "degraded")
        visible = browser.evaluate(
            f"Array.from(document.querySelectorAll('{zs} tbody tr')).filter(r => !r.hidden)"
            ".map(r => r.cells[1].textContent.trim())"
        )
        assert visible == ["clip-degraded"]
        assert browser.evaluate("document.querySelectorAll('table.board tbody tr:not([hidden])').length") == 2
        browser.evaluate(
            "(f => { f.value = ''; f.dispatchEvent(new Event('input')); })(document.getElementById('filter'))"
        )
        assert browser.evaluate("document.querySelectorAll('table.board tbody tr[hidden]').length") == 0
        # tabs: one panel at a time
        browser.click("a[data-tab=retrieval]")
        assert browser.evaluate("document.querySelector('[data-tab-panel=zero-shot]').hidden") is True
        assert browser.evaluate("document.querySelector('[data-tab-panel=retrieval]').hidden") is False
        # the run id with markup stays text in the index
        browser.click("a[data-tab=vqa]")
        assert browser.evaluate("document.body.hasAttribute('data-pwned')") is False
        assert XSS_RUN_ID in browser.evaluate("document.querySelector('[data-benchmark=synthcxr_vqa]').textContent")
        # a report page showing the answers with markup: they are text in the DOM, nothing ran
        report = next(p for p in (site / "runs").glob("*/index.html") if "synthcxr_vqa" in p.read_text())
        browser.open(report.as_uri())
        dom = browser.dom()
        assert browser.evaluate("document.body.hasAttribute('data-pwned')") is False
        assert "PWNED" not in browser.evaluate("document.title")
        assert browser.evaluate("document.scripts.length") == 1  # bench.js only
        assert browser.evaluate("document.querySelectorAll('img[src=x]').length") == 0
        answers = browser.evaluate("Array.from(document.querySelectorAll('td.prediction')).map(c => c.textContent)")
        assert answers and all(a == XSS_ANSWER for a in answers)
        assert "&lt;script&gt;document.title=" in dom and "data-pwned" not in dom.split("<body")[1].split(">")[0]
    assert browser.proc.returncode is not None
    image = Image.open(shot)
    assert image.size == (1280, 900)
    for target in _screenshot_targets(tmp_path):
        target.parent.mkdir(parents=True, exist_ok=True)
        image.convert("RGB").quantize(colors=128).save(target, optimize=True)
        assert target.stat().st_size < 300_000
