"""Analyses over any classification run: calibration, subgroups, paired model comparison, dataset audit.

Every panderm classification task ends with the same three things (docs/OUTPUTS.md): integer labels, a
probability matrix and the evaluated table's rows. The analyses take exactly those, so zero-shot, linear
probe, finetuning and multimodal runs get them alike, during the run (:mod:`.attach`) or afterwards from a
run folder's ``predictions.csv`` (:mod:`.runs`).

- :mod:`.calibration`: ECE (equal width / equal mass), class-wise ECE, Brier, NLL, reliability diagram,
  temperature scaling.
- :mod:`.subgroups`: per-group metrics with CIs, worst group, largest gap, fairness gaps.
- :mod:`.stats`: paired bootstrap, DeLong, Holm.
- :mod:`.compare`: leaderboard over run folders (the model × task × dataset grid that feeds it, the sweep command,
  is a grid of command lines and lives in :mod:`panderm.cli.sweep_run`).
- :mod:`.audit`: duplicates, near-duplicates and group leakage in a dataset CSV.
"""
