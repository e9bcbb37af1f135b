"""Multimodal fine-tuning task (clinical + dermoscopic images + patient metadata).

- `prompts`: the reference's metadata → sentence builders and the one-hot metadata path.
- `data`: dataset loaders (Derm7pt, MILK-11, PAD-UFES-20, any CSV), paired augmentation,
  the torch Dataset and class-balanced sampling.
"""
