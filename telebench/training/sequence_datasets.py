"""Modular arithmetic as a sequence task: every equation ``a ∘ b = c (mod p)`` as three tokens, generated
here, so a transformer can be benchmarked with no download.

The task is the one of Power et al., "Grokking" (2022, arXiv 2201.02177), and Nanda et al. (2023): inputs
are the token ids ``[a, b, =]`` with ``=`` the id p, the label is c. All p² equations exist; a seeded
permutation splits them into train, validation and test, so one split seed gives the same split anywhere.
"""

from __future__ import annotations

from typing import Any

import torch

from telebench.errors import UserError
from telebench.training.dataset_bundle import CLASSIFICATION, DatasetBundle

OPERATIONS = ("add", "subtract", "multiply")
SEQ_LEN = 3  # a, b, "="


def modular_sizes(p: dict[str, Any]) -> tuple[int, int, int]:
    """(n_train, n_val, n_test) of the p² equations split by the two fractions."""
    total = p["modulus"] ** 2
    n_train = round(p["train_fraction"] * total)
    n_val = round(p["val_fraction"] * total)
    if n_train < 1 or n_val < 1 or n_train + n_val > total:
        raise UserError(f"dataset 'modular-addition' train_fraction {p['train_fraction']} and val_fraction "
                        f"{p['val_fraction']} of its {total} equations leave {n_train} training and {n_val} "
                        "validation examples; keep each above 0 and their sum at most 1.")
    return n_train, n_val, total - n_train - n_val


def modular_shape(p: dict[str, Any]) -> tuple[int, int]:
    """(sequence length, classes): three tokens in, one of p residues out."""
    return SEQ_LEN, p["modulus"]


def modular_tokens(p: dict[str, Any]) -> tuple[int, int]:
    """(vocabulary, sequence length): the p residues and the `=` token."""
    return p["modulus"] + 1, SEQ_LEN


def load_modular(p: dict[str, Any], data_root: str | None) -> DatasetBundle:
    modulus = p["modulus"]
    a, b = torch.meshgrid(torch.arange(modulus), torch.arange(modulus), indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    if p["operation"] == "add":
        c = (a + b) % modulus
    elif p["operation"] == "subtract":
        c = (a - b) % modulus
    else:
        c = (a * b) % modulus
    x = torch.stack([a, b, torch.full_like(a, modulus)], dim=1)
    n_train, n_val, n_test = modular_sizes(p)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(p["split_seed"]))
    train, val, test = order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]
    x_test, y_test = (x[test], c[test]) if n_test else (None, None)
    return DatasetBundle("modular-addition", CLASSIFICATION, x[train], c[train], x[val], c[val], x_test, y_test,
                         SEQ_LEN, modulus, vocab=modulus + 1)
