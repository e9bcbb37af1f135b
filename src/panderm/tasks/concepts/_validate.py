"""Kept so ``from panderm.tasks.concepts._validate import as_matrix`` still works; the check lives in
:mod:`panderm.validation`."""

from panderm.validation import as_matrix

__all__ = ["as_matrix"]
