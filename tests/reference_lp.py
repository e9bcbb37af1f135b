"""The reference linear probe restated from the PanDerm-2 code's description, independently of panderm's code.

Subsampling with the literal pandas calls, a seeded `torch.nn.Linear` trained by one full-batch
`torch.optim.LBFGS(line_search_fn="strong_wolfe", max_iter=1000).step`, loss = mean CE + (1/C)·0.5·‖W‖_F
with C = D·K/100, metrics with scikit-learn (OvO macro AUROC, macro AUPR), rounded like the results CSV.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import (accuracy_score, average_precision_score, balanced_accuracy_score, f1_score,
                             roc_auc_score)


def train_rows(frame: pd.DataFrame, percent: float, random_state: int = 42) -> pd.DataFrame:
    train = frame[frame["split"] == "train"].sample(frac=1, random_state=random_state).reset_index(drop=True)
    if percent >= 1:
        return train

    def at_least_one(group):
        return group.sample(n=min(max(1, int(len(group) * percent)), len(group)), random_state=random_state)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        picked = train.groupby("label", group_keys=False).apply(at_least_one)
    # pandas 3 drops the grouping column from apply's result (pandas 2, which the reference ran on, kept it):
    # take the same rows, in the same order, back from the train frame by index.
    balanced = train.loc[picked.index]
    return balanced.sample(frac=1, random_state=random_state).reset_index(drop=True)


def fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    n_classes = len(np.unique(y_train))
    C = x_train.shape[1] * n_classes / 100
    torch.manual_seed(0)
    linear = torch.nn.Linear(x_train.shape[1], n_classes, bias=True)
    feats, labels = torch.tensor(x_train), torch.tensor(y_train).long()
    opt = torch.optim.LBFGS(linear.parameters(), line_search_fn="strong_wolfe", max_iter=1000)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(feats), labels) + (1 / C) * 0.5 * linear.weight.norm()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return torch.softmax(linear(torch.from_numpy(x_test)), dim=1).numpy()


def summary(y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    pred = probs.argmax(1)
    if probs.shape[1] == 2:
        auroc = roc_auc_score(y, probs[:, 1])
    else:
        auroc = roc_auc_score(y, probs, multi_class="ovo", average="macro", labels=list(range(probs.shape[1])))
    onehot = np.eye(probs.shape[1])[y]
    return {"W_F1": f1_score(y, pred, average="weighted"), "AUROC": auroc,
            "BACC": balanced_accuracy_score(y, pred), "ACC": accuracy_score(y, pred),
            "AUPR": average_precision_score(onehot, probs, average="macro")}
