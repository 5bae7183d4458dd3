"""llava-rad: sequence layout, LM loss, generation with padding, the three training stages, checkpoints,
and the must-show number (rule-based CheXpert F1 of generated findings on synthcxr_rrg)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from bench import api
from bench.interfaces import BenchError, GenerationRequest, resolve
from bench.plugins import registry
from bench.runner import data_root, dataset_folder
from models.components.mllm import (
    IGNORE_INDEX,
    assemble,
    build_causal_lm,
    conversation_prefix,
    shifted_lm_loss,
    target_lm_loss,
)
from models.reference import llava_rad as lr


def synthcxr(split: str) -> list:
    spec = registry().get("datasets", "synthcxr")
    return resolve(spec.loader)(dataset_folder(spec, data_root(None)), split)


@pytest.fixture(scope="module")
def random_model() -> lr.LlavaRad:
    return lr.LlavaRad(device="cpu", seed=3)


# --------------------------------------------------------------------------- sequences and loss


def test_assemble_pads_and_labels_only_the_target() -> None:
    d = 2
    a = [torch.ones(2, d), torch.full((3, d), 2.0)]
    b = [torch.full((1, d), 3.0)]
    lab_a = [None, torch.tensor([7, 8, 9])]
    lab_b = [torch.tensor([5])]
    embeds, mask, labels = assemble([a, b], [lab_a, lab_b], pad_left=False)
    assert embeds.shape == (2, 5, d)
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert labels.tolist() == [
        [IGNORE_INDEX, IGNORE_INDEX, 7, 8, 9],
        [5, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX],
    ]
    embeds, mask, labels = assemble([a, b], [lab_a, lab_b], pad_left=True)
    assert mask.tolist() == [[1, 1, 1, 1, 1], [0, 0, 0, 0, 1]]
    assert labels[1].tolist() == [IGNORE_INDEX] * 4 + [5]
    assert embeds[1, 4].tolist() == [3.0, 3.0] and embeds[1, 0].tolist() == [0.0, 0.0]


def test_shifted_lm_loss_matches_a_hand_computed_value() -> None:
    # vocab 2; position 0 predicts labels[1] = 1 with logits (0, ln 3): p = 3/4; position 1 is ignored.
    logits = torch.tensor([[[0.0, math.log(3.0)], [5.0, 0.0], [0.0, 0.0]]])
    labels = torch.tensor([[IGNORE_INDEX, 1, IGNORE_INDEX]])
    assert float(shifted_lm_loss(logits, labels)) == pytest.approx(-math.log(0.75), abs=1e-6)
    with pytest.raises(BenchError, match="no target tokens"):
        shifted_lm_loss(logits, torch.full((1, 3), IGNORE_INDEX))


def test_target_lm_loss_equals_the_loss_over_full_logits() -> None:
    torch.manual_seed(0)
    lm = build_causal_lm(
        {"vocab_size": 11, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
         "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 16}
    ).eval()  # fmt: skip
    embeds, mask = torch.randn(3, 9, 16), torch.ones(3, 9, dtype=torch.long)
    mask[2, 7:] = 0
    labels = torch.full((3, 9), IGNORE_INDEX)
    labels[0, 4:] = torch.tensor([1, 2, 3, 4, 5])  # the rows' targets start at 4, 6 and 5
    labels[1, 6:] = torch.tensor([6, 7, 8])
    labels[2, 5:7] = torch.tensor([9, 10])
    full = shifted_lm_loss(lm(inputs_embeds=embeds, attention_mask=mask).logits, labels)
    assert float(target_lm_loss(lm, embeds, mask, labels)) == pytest.approx(float(full), abs=1e-5)
    labels[0, 4] = IGNORE_INDEX  # the first target moves: still the same value
    full = shifted_lm_loss(lm(inputs_embeds=embeds, attention_mask=mask).logits, labels)
    assert float(target_lm_loss(lm, embeds, mask, labels)) == pytest.approx(float(full), abs=1e-5)
    with pytest.raises(BenchError, match="no target tokens"):
        target_lm_loss(lm, embeds, mask, torch.full((3, 9), IGNORE_INDEX))


def test_conversation_layout_puts_the_image_after_the_user_marker(random_model: lr.LlavaRad) -> None:
    tok = random_model.tok
    before, after = conversation_prefix(tok, "Describe the film.")
    assert before[0] == tok.bos_id
    assert tok.decode(before[1:]) == "user:"  # our tokenizer lower-cases
    assert tok.decode(after).endswith("assistant:") and "describe the film" in tok.decode(after)
    before, after = conversation_prefix(tok, None)  # the alignment stage: image only
    assert before == [tok.bos_id] and tok.decode(after) == "assistant:"


def test_training_sequences_mask_everything_but_findings(random_model: lr.LlavaRad) -> None:
    m = random_model
    feats = m.model.patch_features(m.preprocess([s.image for s in synthcxr("val")[:2]]))
    image_tokens = m.model.projector(feats)
    targets = [[11, 12, 13], [14]]
    _, mask, labels = lr.build_sequences(m.model, m.tok, image_tokens, ["Prompt one.", None], targets, pad_left=False)
    assert labels is not None
    n_image = feats.shape[1]
    for row, target in enumerate(targets):
        kept = labels[row][labels[row] != IGNORE_INDEX].tolist()
        assert kept == [*target, m.tok.eos_id]
        assert int(mask[row].sum()) > n_image + len(target)
    assert int(mask[0].sum()) > int(mask[1].sum())  # the prompt adds tokens


# --------------------------------------------------------------------------- generation


def test_batched_generation_equals_one_by_one(random_model: lr.LlavaRad) -> None:
    """Left padding and the attention mask: a request decodes the same alone or in a mixed batch."""
    samples = synthcxr("val")[:4]
    prompts = ["Findings?", "Write the findings of this chest film, please, in a few sentences.", "X", "Describe."]
    reqs = [GenerationRequest(images=(s.image,), prompt=p, max_new_tokens=12) for s, p in zip(samples, prompts)]
    reqs.append(GenerationRequest(images=(), prompt="Text only request.", max_new_tokens=12))
    batched = random_model.generate(reqs)
    single = [random_model.generate([r])[0] for r in reqs]
    assert batched == single
    assert len(set(batched)) > 1  # a random model still depends on its input
    assert random_model.generate([GenerationRequest(images=reqs[0].images, prompt="Findings?", max_new_tokens=0)]) == [
        ""
    ]


def test_sampling_is_reproducible_per_request(random_model: lr.LlavaRad) -> None:
    req = GenerationRequest(images=(synthcxr("val")[0].image,), prompt="Describe.", max_new_tokens=10, temperature=1.0)
    assert random_model.generate([req]) == random_model.generate([req])


# --------------------------------------------------------------------------- arguments and checkpoints


def test_bad_arguments_and_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="unknown argument"):
        lr.LlavaRad(colour="blue")
    with pytest.raises(BenchError, match="unknown preset"):
        lr.LlavaRad(preset="huge")
    with pytest.raises(BenchError, match="not both"):
        lr.LlavaRad(checkpoint=str(tmp_path), pretrained=str(tmp_path))
    with pytest.raises(BenchError, match="not found"):
        lr.LlavaRad(checkpoint=str(tmp_path / "missing"))
    (tmp_path / "config.json").write_text(json.dumps({"model": "clip-baseline"}))
    with pytest.raises(BenchError, match=r"missing model\.safetensors"):
        lr.LlavaRad(checkpoint=str(tmp_path))
    model = lr.LlavaRad(device="cpu")
    with pytest.raises(BenchError, match="unknown config key"):
        model.fit(synthcxr("val")[:4], {"epochs_of_stage_9": 1})
    with pytest.raises(BenchError, match="at least 2 samples"):
        model.fit(synthcxr("val")[:1], {})
    with pytest.raises(BenchError, match="give lm=DIR"):
        model.fit(synthcxr("val")[:4], {"lm_epochs": 0, "pretrain_encoder": False})
    for bad, message in (
        ({"finetune_epochs": 2.5}, "finetune_epochs must be a non-negative int, got 2.5"),
        ({"lm_lr": "fast"}, "lm_lr must be a non-negative float, got 'fast'"),
        ({"align_lr": float("nan")}, "align_lr must be a non-negative float"),
        ({"lora_r": -1}, "lora_r must be a non-negative int"),
        ({"batch_size": 0}, "batch_size must be positive, got 0"),
        ({"lm_visual_prefix": "yes"}, "lm_visual_prefix must be true or false"),
    ):
        with pytest.raises(BenchError, match=re.escape(message)):
            model.fit(synthcxr("val")[:4], bad)


def _quick_fit(model: lr.LlavaRad, **extra) -> None:
    settings = {"stage1_epochs": 1, "lm_epochs": 1, "align_epochs": 1, "finetune_epochs": 1, "batch_size": 8}
    model.fit(synthcxr("train")[:32], {**settings, **extra, "val_data": synthcxr("val")[:8]})


def test_stages_freeze_what_the_paper_freezes(tmp_path: Path) -> None:
    """Stage 2 trains only the projector; stage 3 changes the language model (merged LoRA); the encoder given
    with encoder=DIR is never changed; the save -> load round trip keeps weights, outputs and fingerprint."""
    from models.reference.clip_baseline import ClipBaseline

    enc = ClipBaseline(device="cpu", seed=1)
    enc.save(tmp_path / "enc")
    lm_dir = tmp_path / "lm"
    _save_tiny_hf_lm(lm_dir)
    from transformers import AutoModelForCausalLM

    lm_before = AutoModelForCausalLM.from_pretrained(str(lm_dir)).state_dict()

    only_align = lr.LlavaRad(device="cpu")
    _quick_fit(only_align, encoder=str(tmp_path / "enc"), lm=str(lm_dir), stage3=False)
    lm_after = only_align.model.lm.state_dict()
    assert all(torch.equal(lm_before[k], lm_after[k]) for k in lm_before)
    enc_state = enc.model.state_dict()
    assert all(torch.equal(enc_state[k], v) for k, v in only_align.model.encoder.state_dict().items())
    assert only_align.config["train"]["stage3"].startswith("skipped")

    full = lr.LlavaRad(device="cpu")
    _quick_fit(full, encoder=str(tmp_path / "enc"), lm=str(lm_dir), lora_r=8)  # tiny's default is full (r=0)
    changed = [k for k, v in full.model.lm.state_dict().items() if not torch.equal(lm_before[k], v)]
    assert changed and all("proj" in k for k in changed)  # LoRA targets: attention and MLP projections
    assert not any("lora" in k for k in full.model.state_dict())  # merged
    assert full.config["train"]["stage3"]["lora"]["merged"] is True
    assert full.config["train"]["stage3"]["trainable_parameters"] < full.num_parameters() / 5

    full.save(tmp_path / "ckpt")
    fp = full.fingerprint()
    assert lr.quick_fingerprint({"checkpoint": str(tmp_path / "ckpt")}) == fp
    again = lr.LlavaRad(checkpoint=str(tmp_path / "ckpt"), device="cpu")
    assert again.fingerprint() == fp
    reqs = [
        GenerationRequest(images=(s.image,), prompt=lr.rrg_prompt(s), max_new_tokens=8) for s in synthcxr("val")[:3]
    ]
    assert again.generate(reqs) == full.generate(reqs)
    (tmp_path / "ckpt" / "lm_tokenizer" / "tokenizer.json").unlink()
    with pytest.raises(BenchError, match="lm_tokenizer"):
        lr.LlavaRad(checkpoint=str(tmp_path / "ckpt"), device="cpu")


def _save_tiny_hf_lm(directory: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.tiny_models import train_tokenizer

    tok = train_tokenizer(300)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(str(directory))
    tok.save_pretrained(str(directory))


def test_own_language_model_round_trip_and_untrained_fingerprint(tmp_path: Path) -> None:
    model = lr.LlavaRad(device="cpu")
    untrained = model.fingerprint()
    _quick_fit(model, pretrain_encoder=False)
    assert model.fingerprint() != untrained
    assert model.config["train"]["stage1"]["encoder"].startswith("random")
    assert model.config["train"]["stage0"]["epochs"] == 1
    model.save(tmp_path / "ckpt")
    assert lr.quick_fingerprint({"checkpoint": str(tmp_path / "ckpt")}) == model.fingerprint()
    loaded = lr.LlavaRad(checkpoint=str(tmp_path / "ckpt"), device="cpu")
    images = [s.image for s in synthcxr("val")[:3]]
    assert (loaded.encode_images(images) == model.encode_images(images)).all()


# --------------------------------------------------------------------------- trained


def _rrg(model_args: dict, out: Path, limit: int | None = None) -> dict:
    outcome = api.evaluate(
        "llava-rad",
        ["synthcxr_rrg", "synthcxr_retrieval"] if limit is None else ["synthcxr_rrg"],
        model_args=model_args,
        output=str(out),
        bootstrap=0,
        device="cpu",
        limit=limit,
        log=lambda m: None,
    )
    return outcome.results["tasks"]


@pytest.fixture(scope="module")
def trained_results(trained_llava_rad: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _rrg({"checkpoint": str(trained_llava_rad)}, tmp_path_factory.mktemp("runs"))


def test_trained_tiny_model_writes_reports_and_embeds(
    trained_llava_rad: Path, trained_results: dict, tmp_path: Path
) -> None:
    record = json.loads((trained_llava_rad / "training.json").read_text())
    assert record["train_args"]["encoder"]
    rrg = trained_results["synthcxr_rrg"]["metrics"]
    assert rrg["bleu4"]["value"] > 0.1 and rrg["rougeL"]["value"] > 0.3, rrg
    retrieval = trained_results["synthcxr_retrieval"]["metrics"]
    assert retrieval["Recall@10 i2t"]["value"] > 0.3  # the stage-1 encoder gives the embed capability
    untrained = _rrg({"seed": 0}, tmp_path / "untrained", limit=40)["synthcxr_rrg"]["metrics"]
    assert untrained["bleu4"]["value"] < 0.02 < rrg["bleu4"]["value"] - 0.08


def test_trained_tiny_model_reaches_the_issue_target_f1(trained_results: dict) -> None:
    assert trained_results["synthcxr_rrg"]["metrics"]["chexpert_rules_f1_micro_14_uncneg"]["value"] >= 0.5


def test_report_requests_get_the_prompt_the_model_was_tuned_with(random_model: lr.LlavaRad) -> None:
    req = GenerationRequest(
        images=(), prompt="TASK PROMPT", context=(("protocol", "report_generation"), ("indication", "Cough.  Fever."))
    )
    native = lr.request_prompt(req, "native")
    assert native == lr.native_prompt("Cough. Fever.") and native.endswith("Reason for the exam: Cough. Fever.")
    assert lr.request_prompt(req, "task") == "TASK PROMPT"
    assert lr.request_prompt(GenerationRequest(images=(), prompt="Q?"), "native") == "Q?"
    assert lr.native_prompt("") == lr.FINDINGS_PROMPT
    # a setting that changes generations changes the identity the prediction cache is keyed by
    assert lr.LlavaRad(device="cpu", seed=3, prompt="task").fingerprint() != random_model.fingerprint()
    assert lr.LlavaRad(device="cpu", seed=3).fingerprint() == random_model.fingerprint()
    with pytest.raises(BenchError, match="prompt must be one of"):
        lr.LlavaRad(prompt="fancy")
