"""Clinical report metrics: the CheXbert F1 table (vs scikit-learn), the CheXbert labeler loaded from a
fake local checkpoint with the released key layout, RadGraph rewards on hand-made annotations,
RadCliQ-v1, the unavailable protocol and the registration."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from bench.interfaces import BenchError
from bench.metrics import chexbert, clinical, radgraph
from bench.metrics.clinical import BLANK, FIVE, NEGATIVE, OBSERVATIONS, POSITIVE, UNCERTAIN
from bench.metrics.unavailable import MetricUnavailable

# ----------------------------------------------------------------------------- F1 table


def _random_labels(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.choice([BLANK, POSITIVE, NEGATIVE, UNCERTAIN], size=(n, len(OBSERVATIONS)), p=[0.5, 0.2, 0.2, 0.1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_f1_table_equals_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cand, ref = _random_labels(rng, 60), _random_labels(rng, 60)
    cand[:, OBSERVATIONS.index("Pneumothorax")] = BLANK  # a column with no positive prediction
    ref[:, OBSERVATIONS.index("Fracture")] = NEGATIVE  # and one with no positive reference
    five = [OBSERVATIONS.index(o) for o in FIVE]
    table = clinical.f1_table(cand, ref)
    assert len(table) == 8
    for policy, positive in (("uncneg", {POSITIVE}), ("uncpos", {POSITIVE, UNCERTAIN})):
        y_true = np.isin(ref, list(positive)).astype(int)
        y_pred = np.isin(cand, list(positive)).astype(int)
        for average in ("micro", "macro"):
            for subset, cols in (("14", slice(None)), ("5", five)):
                want = f1_score(y_true[:, cols], y_pred[:, cols], average=average, zero_division=0)
                assert table[f"f1_{average}_{subset}_{policy}"] == pytest.approx(want, abs=1e-12)


def test_f1_by_hand() -> None:
    # two reports; only Cardiomegaly and Edema ever positive
    cand = np.zeros((2, 14), dtype=int)
    ref = np.zeros((2, 14), dtype=int)
    c, e = OBSERVATIONS.index("Cardiomegaly"), OBSERVATIONS.index("Edema")
    cand[0, c] = POSITIVE  # TP for cardiomegaly
    cand[1, e] = UNCERTAIN  # FP for edema only when uncertain counts as positive
    ref[0, c] = POSITIVE
    ref[1, c] = POSITIVE  # FN for cardiomegaly
    assert clinical.label_f1(cand, ref, "micro", "14", "negative") == pytest.approx(2 / 3)  # tp 1, fn 1
    assert clinical.label_f1(cand, ref, "micro", "14", "positive") == pytest.approx(0.5)  # tp 1, fp 1, fn 1
    # macro over 5: cardiomegaly 2/3, others 0 (zero_division=0)
    assert clinical.label_f1(cand, ref, "macro", "5", "negative") == pytest.approx((2 / 3) / 5)
    assert clinical.binarize(np.array([[0, 1, 2, 3] * 3 + [0, 1]]), "positive").tolist() == [[0, 1, 0, 1] * 3 + [0, 1]]


def test_f1_table_rejects_bad_input() -> None:
    good = np.zeros((3, 14), dtype=int)
    with pytest.raises(ValueError, match=r"shape \[N, 14\]"):
        clinical.label_f1(np.zeros((3, 13)), np.zeros((3, 13)))
    with pytest.raises(ValueError, match="codes"):
        clinical.label_f1(good + 4, good)
    with pytest.raises(ValueError, match="differ in shape"):
        clinical.label_f1(good, np.zeros((2, 14), dtype=int))
    assert math.isnan(clinical.label_f1(good[:0], good[:0]))
    assert clinical.to_harness_labels([0, 1, 2, 3] * 3 + [0, 1])["Cardiomegaly"] == 1


def test_f1_is_additive_for_the_bootstrap() -> None:
    """Summed per-report TP/FP/FN counts give the same F1 as scikit-learn, for one total or a batch of them."""
    rng = np.random.default_rng(3)
    cand, ref = _random_labels(rng, 40), _random_labels(rng, 40)
    for average, subset, policy in clinical.F1_METRICS:
        uncertain = clinical.UNCERTAIN_POLICIES[policy]
        counts = clinical.label_counts(cand, ref, subset, uncertain)
        assert counts.shape == (40, 3 * len(clinical.SUBSETS[subset]))
        want = clinical.label_f1(cand, ref, average, subset, uncertain)
        assert float(clinical.f1_from_counts(counts.sum(axis=0), average)) == pytest.approx(want, abs=1e-12)
        idx = rng.integers(0, 40, size=(5, 40))
        batch = np.stack([counts[i].sum(axis=0) for i in idx])
        resampled = [clinical.label_f1(cand[i], ref[i], average, subset, uncertain) for i in idx]
        np.testing.assert_allclose(clinical.f1_from_counts(batch, average), resampled, atol=1e-12)


def test_scoring_through_the_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`bench score --metrics`: the rule-labeler F1 gets a value and an interval; CheXbert and RadGraph
    without weights are reported unavailable with the reason (value null, never 0)."""
    from bench import api

    monkeypatch.delenv(chexbert.CHECKPOINT_ENV, raising=False)
    monkeypatch.delenv(radgraph.MODEL_ENV, raising=False)
    preds = ["Mild cardiomegaly.", "No effusion.", "Possible left effusion.", "Normal chest.", "Left pneumothorax."]
    refs = ["Cardiomegaly.", "Small left effusion.", "Left pleural effusion.", "No acute disease.", "Pneumothorax."]
    path = tmp_path / "predictions.jsonl"
    lines = [json.dumps({"id": str(i), "prediction": p, "reference": r}) for i, (p, r) in enumerate(zip(preds, refs))]
    path.write_text("\n".join(lines) + "\n")
    names = [
        "chexpert_rules_f1_micro_14_uncneg",
        "chexpert_rules_f1_macro_5_uncpos",
        "chexbert_f1_micro_14_uncneg",
        "radgraph_f1_simple",
        "radcliq_v1",
    ]
    result = api.score(path, metrics=names, bootstrap=50, seed=0)
    for name in names[:2]:
        assert result[name]["value"] == pytest.approx(getattr(clinical, name)(preds, refs))
        low, high = result[name]["ci95"]
        assert low is not None and low <= result[name]["value"] <= high
    for name in names[2:]:
        assert result[name]["value"] is None and "not configured" in result[name]["unavailable"]


def test_rule_f1_metrics_use_the_rule_labeler() -> None:
    from bench.metrics import chexpert_rules

    preds = ["Mild cardiomegaly. No effusion.", "Possible left pleural effusion.", "Normal chest."]
    refs = ["Cardiomegaly.", "Small left pleural effusion.", "No acute disease."]
    cand, ref = chexpert_rules.label_reports(preds), chexpert_rules.label_reports(refs)
    for average, subset, policy in clinical.F1_METRICS:
        fn = getattr(clinical, f"chexpert_rules_f1_{average}_{subset}_{policy}")
        uncertain = clinical.UNCERTAIN_POLICIES[policy]
        assert fn(preds, refs) == clinical.label_f1(cand, ref, average, subset, uncertain)
    # the uncertain effusion counts only when uncertain is positive
    assert clinical.chexpert_rules_f1_micro_5_uncneg(preds, refs) == pytest.approx(2 / 3)
    assert clinical.chexpert_rules_f1_micro_5_uncpos(preds, refs) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="2 predictions but 3 references"):
        clinical.chexpert_rules_f1_micro_14_uncneg(preds[:2], refs)


# ----------------------------------------------------------------------------- CheXbert (fake checkpoint)

CORPUS = [
    "No pleural effusion or pneumothorax.",
    "Mild cardiomegaly with small bilateral pleural effusions.",
    "The lungs are clear. Heart size is normal.",
    "Right lower lobe consolidation, possibly pneumonia.",
    "Left PICC line with tip in the SVC. No acute disease.",
]
KNOWN = [BLANK, POSITIVE, NEGATIVE, UNCERTAIN] * 3 + [BLANK, POSITIVE]  # 13 four-class heads + No Finding


def _write_tokenizer(folder: Path) -> None:
    from tokenizers import BertWordPieceTokenizer

    tok = BertWordPieceTokenizer(lowercase=True)
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(CORPUS * 4, vocab_size=160, special_tokens=special, show_progress=False)
    tok.save_model(str(folder))


def _model(vocab: int, hidden: int = 32, heads: int = 4, seed: int = 0) -> torch.nn.Module:
    from transformers import BertConfig

    config = BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=heads,
        intermediate_size=48,
        max_position_embeddings=512,
    )
    torch.manual_seed(seed)
    return chexbert.build_model(config)


def _save(model: torch.nn.Module, path: Path, **extra_keys: torch.Tensor) -> Path:
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    state.update({f"module.{k}": v for k, v in extra_keys.items()})
    torch.save({"model_state_dict": state, "epoch": 4, "optimizer_state_dict": {}}, path)
    return path


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("chexbert-tok")
    _write_tokenizer(folder)
    return folder


def _vocab_size(folder: Path) -> int:
    return len((folder / "vocab.txt").read_text().splitlines())


@pytest.fixture(scope="module")
def random_ckpt(vocab_dir: Path) -> tuple[Path, torch.nn.Module]:
    """Random weights (labels depend on the text); config.json gives the 4 attention heads."""
    model = _model(_vocab_size(vocab_dir)).eval()
    (vocab_dir / "config.json").write_text(json.dumps({"num_attention_heads": 4}))
    return _save(model, vocab_dir / "chexbert.pth"), model


@pytest.fixture(scope="module")
def known_ckpt(tmp_path_factory: pytest.TempPathFactory, vocab_dir: Path) -> Path:
    """Heads with zero weights and a one-hot bias: every report gets the labels KNOWN."""
    folder = tmp_path_factory.mktemp("chexbert-known")
    model = _model(_vocab_size(vocab_dir), hidden=64, heads=1)  # no config.json: 64 / 64 = 1 head
    with torch.no_grad():
        for head, cls in zip(model.linear_heads, KNOWN, strict=True):
            head.weight.zero_()
            head.bias.zero_()
            head.bias[cls] = 1.0
    return _save(model, folder / "chexbert.pth")


def _reference_forward(model: torch.nn.Module, vocab_dir: Path, text: str) -> tuple[np.ndarray, np.ndarray]:
    """Labels and [CLS] embedding computed without the labeler (one text, no padding)."""
    from transformers import BertTokenizer

    ids = BertTokenizer(str(vocab_dir / "vocab.txt"))(text)["input_ids"]
    with torch.no_grad():
        cls = model.bert(torch.tensor([ids]))[0][:, 0, :]
        labels = [int(head(cls).argmax(dim=1)) for head in model.linear_heads]
    return np.array(labels), cls[0].numpy()


def test_chexbert_loads_the_released_layout_and_labels(
    random_ckpt: tuple[Path, torch.nn.Module], vocab_dir: Path
) -> None:
    path, model = random_ckpt
    keys = torch.load(path, weights_only=True)["model_state_dict"]
    assert "module.bert.embeddings.word_embeddings.weight" in keys and "module.linear_heads.13.bias" in keys
    labeler = chexbert.labeler_from_options({"chexbert_path": str(path), "device": "cpu", "batch_size": 2})
    texts = [*CORPUS, ""]
    labels, emb = labeler.label(texts), labeler.embed(texts)
    assert labels.shape == (len(texts), 14) and emb.shape == (len(texts), 32)
    assert labels[:, :13].max() <= 3 and labels[:, 13].max() <= 1  # No Finding has two classes
    for i, text in enumerate(CORPUS):  # batched + padded == one by one, unpadded
        want_labels, want_emb = _reference_forward(model, vocab_dir, text)
        assert labels[i].tolist() == want_labels.tolist()
        np.testing.assert_allclose(emb[i], want_emb, atol=1e-5)
    assert len(labeler._cache) == len(texts)
    labeler.label(texts)  # cached
    assert len(labeler._cache) == len(texts)


def test_chexbert_tokenisation(random_ckpt: tuple[Path, torch.nn.Module]) -> None:
    labeler = chexbert.labeler_from_options({"chexbert_path": str(random_ckpt[0]), "device": "cpu"})
    tok = labeler.tokenizer
    assert labeler.encode("") == [tok.cls_token_id, tok.sep_token_id]
    long = labeler.encode("pleural effusion " * 400)
    assert len(long) == 512 and long[0] == tok.cls_token_id and long[-1] == tok.sep_token_id
    assert labeler.encode("  No\n\npleural   effusion ") == labeler.encode("no pleural effusion")
    assert chexbert.preprocess(" a\n b  \t c ") == "a b c"


def test_chexbert_f1_through_the_registered_metrics(known_ckpt: Path, vocab_dir: Path) -> None:
    opts = {"chexbert_path": str(known_ckpt), "chexbert_tokenizer": str(vocab_dir), "device": "cpu"}
    labeler = chexbert.labeler_from_options(opts)
    assert labeler.label(["anything", "at all"]).tolist() == [KNOWN, KNOWN]
    assert int(labeler.model.bert.config.num_attention_heads) == 1
    preds, refs = CORPUS[:3], CORPUS[2:]
    known = np.array([KNOWN] * 3)
    for average, subset, policy in clinical.F1_METRICS:
        fn = getattr(clinical, f"chexbert_f1_{average}_{subset}_{policy}")
        want = clinical.label_f1(known, known, average, subset, clinical.UNCERTAIN_POLICIES[policy])
        assert fn(preds, refs, **opts) == want
    # identical labels: micro F1 is 1; macro over 14 averages 1 (positive columns) and 0 (never positive)
    assert clinical.chexbert_f1_micro_14_uncneg(preds, refs, **opts) == 1.0
    n_pos = sum(k == POSITIVE for k in KNOWN)
    assert clinical.chexbert_f1_macro_14_uncneg(preds, refs, **opts) == pytest.approx(n_pos / 14)
    want_cos = clinical.cosine_rows(labeler.embed(preds), labeler.embed(refs))
    assert clinical.chexbert_embedding_cosine(preds, refs, **opts) == pytest.approx(float(np.mean(want_cos)))
    assert np.all(np.abs(want_cos) <= 1 + 1e-9)


def test_chexbert_from_environment(known_ckpt: Path, vocab_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(chexbert.CHECKPOINT_ENV, str(known_ckpt))
    monkeypatch.setenv(chexbert.TOKENIZER_ENV, str(vocab_dir))
    assert clinical.chexbert_f1_micro_5_uncpos(["a"], ["b"]) == 1.0


def test_chexbert_unavailable_without_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(chexbert.CHECKPOINT_ENV, raising=False)
    with pytest.raises(MetricUnavailable, match="CheXbert weights not configured") as info:
        clinical.chexbert_f1_micro_14_uncneg(["a"], ["b"])
    assert "BENCH_CHEXBERT_PATH" in info.value.reason


def test_chexbert_errors_name_the_file_and_keys(tmp_path: Path, vocab_dir: Path) -> None:
    vocab = _vocab_size(vocab_dir)

    def load(path: Path) -> None:
        chexbert.load_labeler.cache_clear()
        chexbert.labeler_from_options({"chexbert_path": str(path), "chexbert_tokenizer": str(vocab_dir)})

    with pytest.raises(BenchError, match=r"CheXbert checkpoint not found: .*nope.pth"):
        load(tmp_path / "nope.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(BenchError, match=r"cannot read CheXbert checkpoint .*garbage.pth"):
        load(tmp_path / "garbage.pth")
    torch.save({"weights": 1}, tmp_path / "other.pth")
    with pytest.raises(BenchError, match=r"other.pth is not a CheXbert checkpoint.*model_state_dict"):
        load(tmp_path / "other.pth")

    model = _model(vocab, hidden=64, heads=1)
    state = {f"module.{k}": v for k, v in model.state_dict().items() if not k.startswith("linear_heads.13.")}
    state["module.classifier.weight"] = torch.zeros(2, 2)
    torch.save({"model_state_dict": state}, tmp_path / "keys.pth")
    with pytest.raises(BenchError) as info:
        load(tmp_path / "keys.pth")
    message = str(info.value)
    assert "keys.pth" in message and "missing keys: linear_heads.13.bias, linear_heads.13.weight" in message
    assert "unexpected keys: classifier.weight" in message

    wrong = _model(vocab, hidden=64, heads=1)
    wrong.linear_heads[0] = torch.nn.Linear(64, 3)
    _save(wrong, tmp_path / "shapes.pth")
    with pytest.raises(
        BenchError, match=r"shapes.pth: weights with unexpected shapes: linear_heads.0.bias \(3,\) != \(4,\)"
    ):
        load(tmp_path / "shapes.pth")

    # a bare state dict without the DataParallel prefix loads too; a missing tokenizer is named
    bare = tmp_path / "bare"
    bare.mkdir()
    torch.save(_model(vocab, hidden=64, heads=1).state_dict(), bare / "chexbert.pth")
    with pytest.raises(BenchError, match=r"no CheXbert tokenizer in .*bare"):
        chexbert.labeler_from_options({"chexbert_path": str(bare / "chexbert.pth")})
    _write_tokenizer(bare)
    chexbert.load_labeler.cache_clear()
    assert chexbert.labeler_from_options({"chexbert_path": str(bare / "chexbert.pth")}).label(["x"]).shape == (1, 14)


def test_chexbert_config_from_weights(vocab_dir: Path) -> None:
    model = _model(_vocab_size(vocab_dir), hidden=64, heads=1)
    state = {k: v for k, v in model.state_dict().items()}
    config = chexbert.infer_config(state, Path("x.pth"))
    assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size) == (64, 2, 48)
    assert (config.vocab_size, config.max_position_embeddings, config.num_attention_heads) == (
        _vocab_size(vocab_dir),
        512,
        1,
    )


# ----------------------------------------------------------------------------- RadGraph rewards


def _entity(tokens: str, label: str, *relations: tuple[str, str]) -> dict:
    return {"tokens": tokens, "label": label, "start_ix": 0, "end_ix": 0, "relations": [list(r) for r in relations]}


REF = {
    "entities": {
        "1": _entity("left", "ANAT-DP"),
        "2": _entity("pleural", "ANAT-DP"),
        "3": _entity("effusion", "OBS-DP", ("located_at", "2")),
        "4": _entity("small", "OBS-DP", ("modify", "3")),
    }
}
HYP = {
    "entities": {
        "1": _entity("right", "ANAT-DP"),
        "2": _entity("Pleural", "ANAT-DP"),
        "3": _entity("effusion", "OBS-DP", ("located_at", "2")),
        "4": _entity("small", "OBS-DP"),
    }
}
# the radgraph package's own example annotation (its tests/radgraph_test.py)
PACKAGE_EXAMPLE = {
    "entities": {
        "1": _entity("acute", "OBS-DA"),
        "2": _entity("cardiopulmonary", "ANAT-DP"),
        "3": _entity("process", "OBS-DA", ("located_at", "2")),
        "4": _entity("moderate", "OBS-DP"),
        "5": _entity("hiatal", "ANAT-DP"),
        "6": _entity("hernia", "OBS-DP"),
    }
}


def test_radgraph_rewards_by_hand() -> None:
    # simple: {right, Pleural, effusion, small} vs {left, pleural, effusion, small}: 2 of 4 -> 0.5
    assert radgraph.reward(HYP, REF, "simple") == pytest.approx(0.5)
    # partial: effusion has a relation on both sides; small only in the reference -> 1 of 4
    assert radgraph.reward(HYP, REF, "partial") == pytest.approx(0.25)
    # complete: relation tuples are lower-cased, so effusion->"Pleural" matches effusion->"pleural"; 1 of 4
    assert radgraph.items(HYP, "complete") >= {("effusion", "OBS-DP", "located_at", "pleural")}
    assert radgraph.reward(HYP, REF, "complete") == pytest.approx(0.25)
    # values the radgraph package's compute_reward gives for the same pair (checked with radgraph 0.1.18)
    assert [radgraph.reward(REF, HYP, lv) for lv in radgraph.LEVELS] == pytest.approx([0.5, 0.25, 0.25])
    for level in radgraph.LEVELS:
        assert radgraph.reward(PACKAGE_EXAMPLE, PACKAGE_EXAMPLE, level) == 1.0
        assert radgraph.reward({"entities": {}}, REF, level) == 0.0
        assert radgraph.reward(REF, {"entities": {}}, level) == 0.0
    with pytest.raises(ValueError, match="unknown RadGraph reward level"):
        radgraph.reward(HYP, REF, "all")
    # RadCliQ's combined score: entity F1 0.5, relation F1 0 ("Pleural" != "pleural" there)
    assert radgraph.radgraph_combined(HYP, REF) == pytest.approx(0.25)
    assert radgraph.radgraph_combined(REF, REF) == 1.0
    assert radgraph.set_f1([], []) == 0.0


def test_radgraph_rewards_match_the_package_when_installed() -> None:
    spec = importlib.util.find_spec("radgraph")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the radgraph package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "rewards.py"
    module_spec = importlib.util.spec_from_file_location("_radgraph_rewards", path)
    rewards = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(rewards)
    for hyp, ref in ((HYP, REF), (REF, HYP), (PACKAGE_EXAMPLE, REF), (HYP, {"entities": {}})):
        assert [radgraph.reward(hyp, ref, lv) for lv in radgraph.LEVELS] == list(
            rewards.compute_reward(hyp, ref, "all")
        )


def test_radgraph_unavailable_reasons(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(radgraph.MODEL_ENV, raising=False)
    with pytest.raises(MetricUnavailable, match=r"RadGraph weights not configured.*BENCH_RADGRAPH_PATH"):
        clinical.radgraph_f1_partial(["a"], ["b"])
    try:
        radgraph._check_package()
    except MetricUnavailable as exc:  # not installed here, or installed with transformers>=5
        assert "radgraph" in exc.reason
        with pytest.raises(MetricUnavailable, match="radgraph"):
            clinical.radgraph_f1_simple(["a"], ["b"], radgraph_path=str(tmp_path))
    else:
        with pytest.raises(BenchError, match=r"is not a RadGraph model: missing config.json, weights.th, vocabulary"):
            clinical.radgraph_f1_simple(["a"], ["b"], radgraph_path=str(tmp_path))


def test_radgraph_staging_resolves_the_encoder_locally(tmp_path: Path) -> None:
    """What the package is handed: an archive is unpacked, the encoder name becomes a local folder."""
    model = tmp_path / "radgraph"
    (model / "vocabulary").mkdir(parents=True)
    (model / "weights.th").write_bytes(b"")
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    config = {"dataset_reader": {"token_indexers": {"bert": {"model_name": "encoder"}}}}
    (model / "config.json").write_text(json.dumps(config))
    import tarfile

    with tarfile.open(tmp_path / "radgraph.tar.gz", "w:gz") as tar:
        for p in sorted(model.rglob("*")):
            tar.add(p, arcname=str(p.relative_to(model)))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    folder = radgraph._model_folder(tmp_path / "radgraph.tar.gz", "radgraph", scratch)
    assert (folder / "config.json").is_file() and folder.parent == scratch
    assert radgraph._model_folder(tmp_path, "radgraph", scratch) == model  # <dir>/<model_type>/config.json
    names = radgraph._encoder_names(config)
    assert names == [(("dataset_reader", "token_indexers", "bert", "model_name"), "encoder")]
    assert radgraph._resolve_encoder("../encoder", None, model / "config.json") == str(encoder)  # beside config
    assert radgraph._resolve_encoder(str(encoder), None, model / "config.json") == str(encoder)
    with pytest.raises(MetricUnavailable, match="not available locally"):
        radgraph._resolve_encoder("no-such-org/no-such-encoder", None, model / "config.json")


def _tiny_radgraph_model(root: Path) -> Path:
    """A random DyGIE model in the radgraph package's layout, with a tiny local BERT encoder."""
    from radgraph.allennlp.data import Vocabulary
    from radgraph.allennlp.modules import text_field_embedders, token_embedders
    from radgraph.dygie.models import dygie
    from transformers import BertConfig, BertModel, BertTokenizer

    encoder = root / "encoder"
    encoder.mkdir()
    _write_tokenizer(encoder)
    BertTokenizer(str(encoder / "vocab.txt")).save_pretrained(str(encoder))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=_vocab_size(encoder),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=20,
    )
    BertModel(config).save_pretrained(str(encoder))
    model = root / "radgraph"
    model.mkdir()
    vocab = Vocabulary(non_padded_namespaces=["*labels"])
    for label in ("", "ANAT-DP", "OBS-DP", "OBS-DA", "OBS-U"):
        vocab.add_token_to_namespace(label, "radgraph__ner_labels")
    for label in ("", "located_at", "modify", "suggestive_of"):
        vocab.add_token_to_namespace(label, "radgraph__relation_labels")
    vocab.save_to_files(str(model / "vocabulary"))
    bert = {"type": "pretrained_transformer_mismatched", "model_name": "../encoder", "max_length": 64}
    dygie_args = {
        "feature_size": 8,
        "feedforward_params": {"num_layers": 1, "hidden_dims": 8, "dropout": 0.0},
        "loss_weights": {"ner": 1.0, "relation": 1.0, "coref": 0.0, "events": 0.0},
        "max_span_width": 4,
        "modules": {
            "coref": {"coref_prop": 0, "max_antecedents": 10, "spans_per_word": 0.3},
            "events": {
                "argument_spans_per_word": 0.8,
                "loss_weights": {"arguments": 1.0, "trigger": 1.0},
                "trigger_spans_per_word": 0.3,
            },
            "ner": {},
            "relation": {"spans_per_word": 0.5},
        },
        "target_task": "relation",
    }
    config_json = {
        "dataset_reader": {"type": "dygie", "max_span_width": 4, "token_indexers": {"bert": bert}},
        "model": {
            "type": "dygie",
            "embedder": {"token_embedders": {"bert": bert}},
            "initializer": {},
            "module_initializer": {},
            **dygie_args,
        },
    }
    (model / "config.json").write_text(json.dumps(config_json))
    embedder = token_embedders.PretrainedTransformerMismatchedEmbedder(model_name=str(encoder), max_length=64)
    net = dygie.DyGIE(
        vocab=vocab, embedder=text_field_embedders.BasicTextFieldEmbedder({"bert": embedder}), **dygie_args
    )
    torch.save(net.state_dict(), model / "weights.th")
    return model


def test_radgraph_end_to_end_with_a_local_model(tmp_path: Path) -> None:
    """The package runs offline from a local folder (needs radgraph and transformers<5, so usually skipped)."""
    try:
        radgraph._check_package()
    except MetricUnavailable as exc:
        pytest.skip(exc.reason)
    model = _tiny_radgraph_model(tmp_path)
    preds = ["small left pleural effusion", "", "the heart is enlarged"]
    refs = ["no acute cardiopulmonary process", "lungs are clear", "the heart is enlarged"]
    opts = {"radgraph_path": str(model), "device": "cpu"}
    annotator = radgraph.annotator_from_options(opts)
    hyps, golds = annotator.annotate(preds), annotator.annotate(refs)
    assert hyps[0]["entities"] and hyps[1] == {"entities": {}}
    for level in radgraph.LEVELS:
        got = getattr(clinical, f"radgraph_f1_{level}")(preds, refs, **opts)
        want = [radgraph.reward(h, g, level) if p else 0.0 for p, h, g in zip(preds, hyps, golds, strict=True)]
        assert got == pytest.approx(float(np.mean(want)))
    assert clinical.radgraph_f1_complete(preds[2:], refs[2:], **opts) == 1.0  # identical reports


# ----------------------------------------------------------------------------- RadCliQ-v1


def _words(text: str) -> list[str]:
    return text.split()


def test_radcliq_bleu2_matches_fast_bleu() -> None:
    # fast_bleu's documented example (BLEU-2 = NLTK sentence BLEU with smoothing method1)
    ref1 = _words("It is a guide to action that ensures that the military will forever heed Party commands")
    ref2 = (
        "It is the guiding principle which guarantees the military forces always being under the command of the Party"
    )
    ref3 = _words("It is the practical guide for the army always to heed the directions of the party")
    hyp1 = _words("It is a guide to action which ensures that the military always obeys the commands of the party")
    hyp2 = _words("he read the book because he was interested in world history")
    refs = [ref1, _words(ref2), ref3]
    assert clinical.sentence_bleu(refs, hyp1, 2) == pytest.approx(0.7453559924999299, abs=1e-12)
    assert clinical.sentence_bleu(refs, hyp2, 2) == pytest.approx(0.0191380231127159, abs=1e-12)
    assert clinical.sentence_bleu([["a", "b"]], [], 2) == 0.0
    assert clinical.sentence_bleu([["a", "b"]], ["c"], 2) == 0.0  # no unigram match
    assert clinical.radcliq_tokens("No  effusion. Stable.") == ["no", "effusion", ".", "stable", "."]
    scores = clinical.radcliq_bleu2(["No effusion.", "x"], ["No effusion.", "y z"])
    assert scores[0] == pytest.approx(1.0) and scores[1] == 0.0


def test_radcliq_bertscore_with_a_local_model(tmp_path: Path) -> None:
    """bert-score with a tiny local RoBERTa in place of distilroberta-base (skipped without bert-score)."""
    if importlib.util.find_spec("bert_score") is None:
        pytest.skip("bert-score is not installed (optional: medvlbench[nlg-bertscore])")
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

    folder = tmp_path / "distilroberta-base"
    folder.mkdir()
    tok = ByteLevelBPETokenizer()
    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok.train_from_iterator(CORPUS * 4, vocab_size=300, special_tokens=special, show_progress=False)
    tok.save_model(str(folder))
    RobertaTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=128).save_pretrained(
        str(folder)
    )
    torch.manual_seed(0)
    config = RobertaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=16,
        num_hidden_layers=6,
        num_attention_heads=2,
        intermediate_size=20,
        max_position_embeddings=130,
        pad_token_id=1,
    )
    RobertaModel(config).save_pretrained(str(folder))
    # IDF over the references: tokens in every reference weigh 0, so the two references differ
    f1 = clinical.radcliq_bertscore(CORPUS[:2], [CORPUS[2], CORPUS[1]], {"bertscore_path": str(folder)})
    assert f1.shape == (2,) and f1[1] == pytest.approx(1.0) and f1[0] < 1.0  # rescaled: identical -> 1


def test_radcliq_v1_linear_model() -> None:
    mean = clinical.RADCLIQ_V1_MEAN
    at_mean = clinical.radcliq_v1_from_inputs(*([m] for m in mean))
    assert at_mean[0] == pytest.approx(clinical.RADCLIQ_V1_INTERCEPT, abs=1e-12)
    x = np.array([[0.8, 0.7, 0.9, 0.5], [0.1, 0.2, 0.3, 0.4]])
    want = ((x - mean) / clinical.RADCLIQ_V1_SCALE) @ clinical.RADCLIQ_V1_COEF + clinical.RADCLIQ_V1_INTERCEPT
    np.testing.assert_allclose(clinical.radcliq_v1_from_inputs(*x.T), want)
    # one standard deviation more RadGraph agreement lowers the score by its coefficient (0.377)
    up = clinical.radcliq_v1_from_inputs([mean[0] + clinical.RADCLIQ_V1_SCALE[0]], [mean[1]], [mean[2]], [mean[3]])
    assert up[0] - at_mean[0] == pytest.approx(-0.377083683)
    # the better report (all inputs higher) scores lower; BLEU-2's weight is ~0
    s = clinical.radcliq_v1_from_inputs(*x.T)
    assert s[0] < s[1]
    assert clinical.RADCLIQ_V1_COLUMNS == ("radgraph_combined", "bertscore", "semb_score", "bleu_score")


def test_radcliq_v1_unavailable_names_every_missing_input(monkeypatch: pytest.MonkeyPatch) -> None:
    for env in (chexbert.CHECKPOINT_ENV, radgraph.MODEL_ENV, clinical.BERTSCORE_ENV):
        monkeypatch.delenv(env, raising=False)
    with pytest.raises(MetricUnavailable) as info:
        clinical.radcliq_v1(["No effusion."], ["Small effusion."])
    reason = info.value.reason
    assert "radgraph_combined: RadGraph weights not configured" in reason
    assert "bertscore: BERTScore model not configured" in reason
    assert "semb_score: CheXbert weights not configured" in reason


def test_radcliq_v1_with_all_inputs(monkeypatch: pytest.MonkeyPatch, known_ckpt: Path, vocab_dir: Path) -> None:
    """The composition, with RadGraph and BERTScore stubbed (their weights are not available here)."""
    monkeypatch.setattr(radgraph, "combined_from_options", lambda p, r, o: [0.6, 0.2])
    monkeypatch.setattr(clinical, "radcliq_bertscore", lambda p, r, o: np.array([0.7, 0.1]))
    opts = {"chexbert_path": str(known_ckpt), "chexbert_tokenizer": str(vocab_dir)}
    preds, refs = ["No effusion.", "Cardiomegaly."], ["No pleural effusion.", "Normal chest."]
    inputs = clinical.radcliq_v1_inputs(preds, refs, **opts)
    labeler = chexbert.labeler_from_options(opts)
    np.testing.assert_allclose(inputs["semb_score"], clinical.cosine_rows(labeler.embed(preds), labeler.embed(refs)))
    np.testing.assert_allclose(inputs["bleu_score"], clinical.radcliq_bleu2(preds, refs))
    want = clinical.radcliq_v1_from_inputs([0.6, 0.2], [0.7, 0.1], inputs["semb_score"], inputs["bleu_score"])
    assert clinical.radcliq_v1(preds, refs, **opts) == pytest.approx(float(np.mean(want)))


# ----------------------------------------------------------------------------- registration


def test_registration_is_lazy_and_complete() -> None:
    code = (
        "import sys\n"
        "from bench.metrics import plugin\n"
        "specs = plugin._clinical()\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'sklearn') if m in sys.modules)\n"
        "print(heavy, len(specs))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] 20"
    from bench.interfaces import resolve
    from bench.metrics import plugin

    specs = {s.name: s for s in plugin._clinical()}
    assert {f"chexbert_f1_{a}_{n}_{u}" for a, n, u in clinical.F1_METRICS} <= set(specs)
    assert {f"chexpert_rules_f1_{a}_{n}_{u}" for a, n, u in clinical.F1_METRICS} <= set(specs)
    assert {"radgraph_f1_simple", "radgraph_f1_partial", "radgraph_f1_complete", "radcliq_v1"} <= set(specs)
    assert not specs["radcliq_v1"].higher_is_better
    for spec in specs.values():
        assert spec.family == "clinical" and callable(resolve(spec.fn)) and spec.description
