"""Registers the built-in models (lazy factories: nothing is built or imported at listing)."""

from __future__ import annotations

from bench.interfaces import BACKBONE, EMBED, GENERATE, GROUND, TRAIN, ModelSpec
from bench.plugins import hookimpl


@hookimpl
def bench_register_models() -> list[ModelSpec]:
    return [
        ModelSpec(
            name="openai",
            factory="models.openai_chat:OpenAIChat",
            capabilities=frozenset({GENERATE}),
            description="Any OpenAI-compatible chat endpoint (vLLM, SGLang, TGI, Ollama, OpenAI): "
            "`--model-args model=NAME,base_url=http://127.0.0.1:8000/v1`; key from OPENAI_API_KEY "
            "(or api_key_env=VAR); non-loopback hosts need allow_remote=true.",
            kind="generative (API)",
            quick_fingerprint="models.openai_chat:quick_fingerprint",
        ),
        ModelSpec(
            name="hf-vlm",
            factory="models.hf_vlm:HFVisionLanguageModel",
            capabilities=frozenset({GENERATE}),
            description="Any transformers image-text-to-text checkpoint (LLaVA, LLaVA-NeXT, Qwen2-VL, ...) from a "
            "local folder, prompted with its chat template: `--model-args pretrained=DIR[,dtype=auto|bfloat16|"
            "float16|float32,batch_size=N,max_new_tokens=N]`.",
            kind="generative",
            quick_fingerprint="models.hf_vlm:quick_fingerprint",
        ),
        ModelSpec(
            name="hf-vlm-embed",
            factory="models.mllm_embed:HFVLMEmbed",
            capabilities=frozenset({EMBED, GENERATE}),
            description="hf-vlm plus embeddings from the language model's hidden states (LLaVA-RadZ 'CLIP "
            "inference'): `embed_pool=mean|last,embed_layer=-1,embed_input=image|prompt`.",
            kind="generative",
            quick_fingerprint="models.mllm_embed:quick_fingerprint_vlm",
        ),
        ModelSpec(
            name="hf-llava",
            factory="models.hf_llava:HFLlava",
            capabilities=frozenset({GENERATE}),
            description="LLaVA in the transformers format or the original repository's format (LLaVA-Med; "
            "converted at load): `--model-args pretrained=DIR[,conv_template=auto|llava_v1|vicuna_v1|"
            "mistral_instruct|...,vision_tower=CLIP_DIR]`.",
            kind="generative",
            quick_fingerprint="models.hf_llava:quick_fingerprint",
        ),
        ModelSpec(
            name="hf-llava-embed",
            factory="models.mllm_embed:HFLlavaEmbed",
            capabilities=frozenset({EMBED, GENERATE}),
            description="hf-llava plus embeddings from the language model's hidden states (LLaVA-RadZ 'CLIP "
            "inference'): `embed_pool=mean|last,embed_layer=-1,embed_input=image|prompt`.",
            kind="generative",
            quick_fingerprint="models.mllm_embed:quick_fingerprint_llava",
        ),
        ModelSpec(
            name="clip-baseline",
            factory="models.reference.clip_baseline:ClipBaseline",
            capabilities=frozenset({EMBED, GROUND, BACKBONE, TRAIN}),
            description="CLIP-style dual encoder (small ViT + text transformer, InfoNCE); "
            "`--model-args checkpoint=DIR` for trained weights.",
            kind="dual encoder",
            presets=("tiny", "paper"),
            quick_fingerprint="models.reference.clip_baseline:quick_fingerprint",
        ),
        ModelSpec(
            name="llava-rad",
            factory="models.reference.llava_rad:LlavaRad",
            capabilities=frozenset({GENERATE, EMBED, BACKBONE, TRAIN}),
            description="LLaVA-Rad: CLIP-pretrained image encoder -> 2-layer MLP projector -> causal language model; "
            "stage 2 trains the projector on image-only findings generation, stage 3 LoRA-tunes the language "
            "model with the indication as context. `--model-args checkpoint=DIR` (ours) or `pretrained=DIR` "
            "(a released LLaVA checkpoint, loaded as hf-llava); `bench train llava-rad --train-args encoder=DIR` "
            "starts from a trained clip-baseline.",
            kind="generative",
            presets=("tiny", "paper"),
            quick_fingerprint="models.reference.llava_rad:quick_fingerprint",
        ),
        ModelSpec(
            name="llava-radz",
            factory="models.reference.llava_radz:LlavaRadZ",
            capabilities=frozenset({EMBED, BACKBONE, GENERATE, TRAIN}),
            description="LLaVA-RadZ: zero-shot recognition from an MLLM's decoder features (DFAT: learned "
            "<ImgCls>/<TxtCls> tokens, global/local cross InfoNCE; DKAM: disease-description anchors). "
            "`bench train llava-radz --train-args base=DIR` starts from a trained llava-rad; ablation switches "
            "dkam=false, library=entity|disease, features=global|local|both, prompt=false.",
            kind="generative (decoder features)",
            presets=("tiny", "paper"),
            quick_fingerprint="models.reference.llava_radz:quick_fingerprint",
        ),
        ModelSpec(
            name="lgdea",
            factory="models.reference.lgdea:LGDEA",
            capabilities=frozenset({EMBED, GROUND, BACKBONE, TRAIN}),
            description="LGDEA: diagnostic-evidence alignment under limited pairing (evidence extracted from "
            "reports by rules or an OpenAI-compatible LLM, prototypes, lesion queries, evidence graphs with "
            "label propagation). `--train-args paired_fraction=0.1` keeps 10% of the pairs; `init=DIR` starts from a "
            "trained clip-baseline's towers.",
            kind="dual encoder",
            presets=("tiny", "paper"),
            quick_fingerprint="models.reference.lgdea:quick_fingerprint",
        ),
        ModelSpec(
            name="hf-clip",
            factory="models.hf_clip:HFClip",
            capabilities=frozenset({EMBED, GROUND, BACKBONE}),
            description="Any transformers dual encoder (CLIP, SigLIP, ...) from a local save_pretrained folder: "
            "`--model-args pretrained=DIR[,dtype=float32|bfloat16|float16|auto,batch_size=N]`; grounding maps "
            "from the projected patch tokens.",
            kind="dual encoder",
            quick_fingerprint="models.hf_clip:quick_fingerprint",
        ),
        ModelSpec(
            name="openclip",
            factory="models.open_clip_model:OpenClip",
            capabilities=frozenset({EMBED, GROUND, BACKBONE}),
            description="An open_clip model from a local folder (open_clip_config.json + open_clip_pytorch_model.bin "
            "or .safetensors; BiomedCLIP-style): `--model-args pretrained=DIR`; needs the optional extra "
            "`pip install 'medvlbench[openclip]'`.",
            kind="dual encoder",
            quick_fingerprint="models.open_clip_model:quick_fingerprint",
        ),
        ModelSpec(
            name="meddr-rag",
            factory="models.reference.meddr_rag:MedDrRAG",
            capabilities=frozenset({GENERATE}),
            description="MedDr retrieval-augmented diagnosis: top-k cosine retrieval of a registered embed model's "
            "image embeddings over a dataset split, then label voting (mode=voting) or the neighbours' labels/"
            "reports put in a registered generate model's prompt (mode=rag): `--model-args embedder=NAME,"
            "embedder_args=K=V;K=V[,generator=NAME,generator_args=K=V;K=V],database=synthcxr:train,k=5,"
            "mode=rag|voting,inject=labels|reports|both`.",
            kind="retrieval-augmented",
            quick_fingerprint="models.reference.meddr_rag:quick_fingerprint",
        ),
    ]
