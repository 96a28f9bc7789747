"""Backbones: timm CNN/ViT models (``timm_backbone``), open_clip models (``clip``) and the retrieval head."""
