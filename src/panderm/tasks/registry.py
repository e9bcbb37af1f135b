"""The one list of tasks: what each is called, which `panderm` subcommand runs it, and where its code lives.

the demo runs the tasks that have a demo from this list, and a test checks that every task's subcommand
is in `panderm.cli.COMMANDS`. Modules are named, not imported, so the command line's help and `import panderm`
stay cheap; a task is loaded only when it runs (:meth:`Task.load`).
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from types import ModuleType


@dataclass(frozen=True)
class Task:
    name: str
    command: str  # the `panderm` subcommand
    module: str  # the module holding the task's run (and `demo`, when `report_key` is set)
    summary: str
    report_key: str | None = None  # the demo's results.json key (None: not part of the demo)

    def load(self) -> ModuleType:
        return import_module(self.module)


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("zeroshot", "zeroshot", "panderm.tasks.zeroshot", "zero-shot classification: class names x templates",
         report_key="zeroshot"),
    Task("retrieval", "retrieval", "panderm.tasks.retrieval.pipeline", "zero-shot image <-> text retrieval",
         report_key="retrieval_run"),
    Task("linear_probe", "linear-probe", "panderm.tasks.linear_probe.pipeline",
         "logistic regression on frozen features, few-shot fractions", report_key="linear_probe_run"),
    Task("finetune", "finetune", "panderm.tasks.finetune", "full finetuning of a backbone"),
    Task("multimodal", "multimodal", "panderm.tasks.multimodal.train",
         "clinical + dermoscopic image + metadata-as-text finetuning"),
    Task("concepts", "concepts", "panderm.tasks.concepts.run",
         "sparse autoencoder concepts, concept bottleneck, explanations"),
    Task("segmentation", "segment", "panderm.tasks.segmentation", "lesion segmentation (UPerNet on a ViT)"),
)}

#: the tasks the demo (panderm.demo) runs, in order, after feature extraction
DEMO_TASKS = tuple(name for name, t in TASKS.items() if t.report_key)
