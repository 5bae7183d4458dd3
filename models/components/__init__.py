"""Shared building blocks (ViT, text encoder, tokenizer, projector, preprocessing, trainer).

Each module has one job; import the module you need, e.g. ``from models.components.vit import
VisionTransformer``. Nothing is imported here so that importing the package stays cheap.
"""
