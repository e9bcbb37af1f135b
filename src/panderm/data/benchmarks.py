"""Zero-shot classification benchmarks of the reference toolkit.

One `Benchmark` record per dataset evaluated by PanDerm-2 / DermFM-Zero, read from the package data file
``zeroshot_benchmarks.json`` (docs/REFERENCE.md, Zero-shot classification): the class names in label order (the
CSV ``label`` column is an index into this tuple, so the order is part of the benchmark) and, for a reference
benchmark, the fields of the reference door: its flag, the CSV path the reference script uses, the folder its
per-sample CSV goes to, the metrics it computes and the key names it logs them under, and the metric the
published README table reports. A benchmark that is not a reference one needs only a name and class names.

We compute metrics under the metric registry's names (`ACCURACY`, `WEIGHTED_F1`, `TOP3_ACCURACY`, `AUROC`;
:mod:`panderm.metrics`); `Benchmark.reference_results` renames such a dict to the reference key names
(``zeroshot-pad-acc`` ...) so logs can be compared 1:1.

Also here:
- `get_benchmark` — lookup by case-insensitive name or alias;
- `README_ORDER` / `readme_average` — the published zero-shot table's columns
  and its "Average" (a plain mean mixing ACC and AUROC, as the README does);
- `load_classnames` — a user class list for a custom zero-shot run (the
  reference makes users edit ``customized_CLASSNAMES`` in source instead);
- `code_to_label` — dataset abbreviations (HAM ``nv``, PAD ``NEV``) to
  reference label indices, for building benchmark CSVs from raw metadata.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType

from panderm.errors import DataError
from panderm.metrics import is_metric
from panderm.report import record_input

__all__ = [
    "ACCURACY",
    "WEIGHTED_F1",
    "TOP3_ACCURACY",
    "AUROC",
    "ZERO_SHOT_DIR",
    "HAM_CLASSNAMES",
    "PAD_CLASSNAMES",
    "SNU_134_CLASSNAMES",
    "SD_128_CLASSNAMES",
    "DAFFODIL_5_CLASSNAMES",
    "PH2_CLASSNAMES",
    "ISIC20_CLASSNAMES",
    "DERMNET_CLASSNAMES",
    "Benchmark",
    "BENCHMARKS",
    "README_ORDER",
    "get_benchmark",
    "readme_average",
    "load_classnames",
    "code_to_label",
]

# The metric registry's names of the metrics the reference benchmarks report.
ACCURACY = "accuracy"  # sklearn accuracy_score; the README's "top-1" / "ACC"
WEIGHTED_F1 = "weighted_f1"  # f1_score(average="weighted")
TOP3_ACCURACY = "top3_accuracy"  # top_k_accuracy_score(k=3)
AUROC = "auroc"  # OvR macro on one-hot; equals binary AUROC for K=2

# How the README table labels each metric.
_README_LABELS = {ACCURACY: "ACC", AUROC: "AUROC"}

# Where the reference script expects the benchmark CSVs, relative to the data
# root (the reference repo root).
ZERO_SHOT_DIR = "data/zero-shot-classification"

_METRIC_MODES = ("wf1+acc", "wf1+accs", "auroc+acc", "acc")


def _norm(name: str) -> str:
    """Lookup key: case-insensitive, ignoring '-', '_' and spaces (so "SD-128",
    "sd_128" and "sd128" are the same benchmark)."""
    return re.sub(r"[\s_\-]+", "", name.strip().lower())


@dataclass(frozen=True)
class Benchmark:
    """One zero-shot benchmark: a name and its class names, plus the reference door's fields when it is one
    of the reference benchmarks (``flag`` given). Give the optional fields by keyword.

    Attributes:
        name: canonical name, e.g. ``"PAD-6"``.
        flag: the reference ``src/main.py`` flag that runs it (``zeroshot-eval1`` for PAD-6, with its two
            leading dashes); None: not a reference benchmark.
        classnames: class names; the CSV label is an index into this tuple.
        default_csv: CSV path relative to the data root, as the reference script.
        folder: the reference per-sample CSV folder (``<logs>/<folder>/<model>.csv``).
        metric_mode: the reference ``run(..., metric=...)`` mode.
        result_keys: ``(reference key, our metric name)`` pairs, in the order
            the reference logs them.
        readme_metric: our name of the metric in the published README table.
        aliases: extra lookup names for `get_benchmark`.
    """

    name: str
    flag: str | None = None
    classnames: tuple[str, ...] = ()
    default_csv: str | None = None
    folder: str | None = None
    metric_mode: str | None = None
    result_keys: tuple[tuple[str, str], ...] = ()
    readme_metric: str | None = None
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Guards against slips in the benchmark data; these are programming errors, hence not DataError.
        if len(self.classnames) < 2 or not all(isinstance(c, str) and c for c in self.classnames):
            raise ValueError(f"{self.name}: a benchmark needs at least 2 non-empty class names")
        if len({c.lower() for c in self.classnames}) != len(self.classnames):
            raise ValueError(f"{self.name}: duplicate class names")
        if self.flag is not None:  # a reference benchmark: every door field is needed
            missing = [f for f in ("default_csv", "folder", "metric_mode", "readme_metric")
                       if getattr(self, f) is None] + ([] if self.result_keys else ["result_keys"])
            if missing:
                raise ValueError(f"{self.name}: a reference benchmark needs {', '.join(missing)}")
        if self.metric_mode is not None and self.metric_mode not in _METRIC_MODES:
            raise ValueError(f"{self.name}: unknown metric mode {self.metric_mode!r}")
        metrics = [m for _, m in self.result_keys]
        if any(not is_metric(m) for m in metrics) or len(set(metrics)) != len(metrics):
            raise ValueError(f"{self.name}: bad result_keys {self.result_keys!r}")
        if self.readme_metric is not None and self.readme_metric not in metrics:
            raise ValueError(f"{self.name}: README metric {self.readme_metric!r} not computed")

    @property
    def is_reference(self) -> bool:
        """Whether this is one of the reference toolkit's benchmarks (it has the door's fields)."""
        return self.flag is not None

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    @property
    def reference_keys(self) -> tuple[str, ...]:
        """Reference result key names, in logging order."""
        return tuple(k for k, _ in self.result_keys)

    @property
    def metrics(self) -> tuple[str, ...]:
        """Our metric names this benchmark reports, in reference order."""
        return tuple(m for _, m in self.result_keys)

    @property
    def readme_key(self) -> str:
        """The reference key holding the README metric (e.g. ``zeroshot-SNU-134-top1-acc``)."""
        return next(k for k, m in self.result_keys if m == self.readme_metric)

    @property
    def readme_label(self) -> str:
        """How the README table names the metric: ``"ACC"`` or ``"AUROC"``."""
        return _README_LABELS[self.readme_metric]

    def csv_path(self, data_root: str | os.PathLike[str] = ".") -> Path:
        """The default benchmark CSV under ``data_root``."""
        if self.default_csv is None:
            raise DataError(f"benchmark {self.name} has no default CSV: give the path of its CSV")
        return Path(data_root) / self.default_csv

    def reference_results(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """Rename our metrics dict to the reference key names.

        ``{"accuracy": .7, "weighted_f1": .6}`` for PAD-6 gives
        ``{"zeroshot-pad-wf1": .6, "zeroshot-pad-acc": .7}``. Metrics this
        benchmark does not report are dropped; a metric it reports but that is
        missing from ``metrics`` (e.g. AUROC left uncomputed because only one
        class is present) is left out rather than invented. Empty for a
        benchmark that is not a reference one.
        """
        return {key: metrics[m] for key, m in self.result_keys if m in metrics}


def _load_data() -> dict:
    text = resources.files("panderm.data").joinpath("zeroshot_benchmarks.json").read_text(encoding="utf-8")
    return json.loads(text)


def _from_entry(entry: Mapping) -> Benchmark:
    ref = entry.get("reference") or {}
    return Benchmark(
        name=entry["name"],
        flag=ref.get("flag"),
        classnames=tuple(entry["classnames"]),
        default_csv=ref.get("csv"),
        folder=ref.get("folder"),
        metric_mode=ref.get("metric_mode"),
        result_keys=tuple((str(k), str(m)) for k, m in ref.get("result_keys", ())),
        readme_metric=ref.get("readme_metric"),
        aliases=tuple(entry.get("aliases", ())),
    )


_DATA = _load_data()

# Insertion order = the reference flag order (eval1..eval7, then eval).
_ALL: tuple[Benchmark, ...] = tuple(_from_entry(e) for e in _DATA["benchmarks"])

BENCHMARKS: Mapping[str, Benchmark] = MappingProxyType({b.name: b for b in _ALL})

# Column order of the published zero-shot table (PanDerm-2 README at 8f1065f;
# DermFM-Zero repeats it). DermNet is not in it.
README_ORDER: tuple[str, ...] = tuple(_DATA["readme_order"])

# The class lists under their historical names (label index = position).
PAD_CLASSNAMES: tuple[str, ...] = BENCHMARKS["PAD-6"].classnames
HAM_CLASSNAMES: tuple[str, ...] = BENCHMARKS["HAM-7"].classnames
SNU_134_CLASSNAMES: tuple[str, ...] = BENCHMARKS["SNU-134"].classnames
SD_128_CLASSNAMES: tuple[str, ...] = BENCHMARKS["SD-128"].classnames
DAFFODIL_5_CLASSNAMES: tuple[str, ...] = BENCHMARKS["Daffodil-5"].classnames
PH2_CLASSNAMES: tuple[str, ...] = BENCHMARKS["PH2-2"].classnames
ISIC20_CLASSNAMES: tuple[str, ...] = BENCHMARKS["ISIC2020-2"].classnames
DERMNET_CLASSNAMES: tuple[str, ...] = BENCHMARKS["DermNet-23"].classnames

# The public datasets label images with abbreviations (HAM10000 `dx`, PAD-UFES-20 `diagnostic`) in an order
# unrelated to the reference class tuples, so a benchmark CSV built from raw metadata must remap them. Keys are
# lower-case; lookup is case-insensitive (HAM codes are lower-case, PAD's upper).
_CODES: dict[str, dict[str, int]] = {e["name"]: dict(e["codes"]) for e in _DATA["benchmarks"] if "codes" in e}


def _build_index() -> dict[str, Benchmark]:
    index: dict[str, Benchmark] = {}
    for bench in _ALL:
        for label in (bench.name, bench.folder, *bench.aliases):
            if label is None:
                continue
            key = _norm(label)
            other = index.setdefault(key, bench)
            if other is not bench:  # an alias must never be ambiguous
                raise RuntimeError(f"alias {label!r} names both {other.name} and {bench.name}")
    return index


_INDEX = _build_index()


def get_benchmark(name: str | Benchmark) -> Benchmark:
    """Look a benchmark up by name, per-sample folder name or alias.

    Matching ignores case, ``-``, ``_`` and spaces: ``"pad"``, ``"PAD-6"``,
    ``"pad6"``, ``"ISIC20"``, ``"sd128"`` all work. A `Benchmark` is returned
    as is. Raises `DataError` listing the known names otherwise.
    """
    if isinstance(name, Benchmark):
        return name
    bench = _INDEX.get(_norm(str(name)))
    if bench is None:
        known = ", ".join(BENCHMARKS)
        aliases = ", ".join(a for b in _ALL for a in b.aliases)
        raise DataError(
            f"unknown zero-shot benchmark {name!r}; known: {known} (aliases: {aliases})"
        )
    return bench


def readme_average(results: Mapping[str, Mapping[str, float]]) -> float:
    """Mean of each present benchmark's README metric, as the README "Average".

    ``results`` maps a benchmark name or alias to its metrics dict, keyed by
    our metric names or by the reference keys. The README mixes ACC and AUROC
    in one plain mean; so does this. Only the benchmarks present count, so
    pass all seven of `README_ORDER` to compare with the published column.
    Raises `DataError` for an empty input, an unknown name, a benchmark given
    twice, or a benchmark lacking its README metric.
    """
    if not results:
        raise DataError("no benchmark results to average")
    seen: dict[str, str] = {}
    values: list[float] = []
    for given, metrics in results.items():
        bench = get_benchmark(given)
        if bench.name in seen:
            raise DataError(
                f"benchmark {bench.name} given twice (as {seen[bench.name]!r} and {given!r})"
            )
        seen[bench.name] = given
        if bench.readme_metric is None:
            raise DataError(f"{bench.name} is not in the README table (not a reference benchmark)")
        if bench.readme_metric in metrics:
            value = metrics[bench.readme_metric]
        elif bench.readme_key in metrics:
            value = metrics[bench.readme_key]
        else:
            raise DataError(
                f"results for {bench.name} lack its README metric "
                f"({bench.readme_metric!r} or {bench.readme_key!r}); got {sorted(metrics)}"
            )
        values.append(float(value))
    return sum(values) / len(values)


# --------------------------------------------------------------------------
# User class lists (custom zero-shot)
# --------------------------------------------------------------------------
# Header names accepted for the class-name column of a class CSV, in order of
# preference: the explicit ones first, then `diag`, which the reference toy CSV
# and our sample data use. A HAM `classes.csv` has both `dx` (codes) and
# `diag` (names); we want the names.
_NAME_COLUMNS = ("classname", "class_name", "name", "diag")


def _check_names(names: list[str], where: list[str], source: str) -> tuple[str, ...]:
    """Reject lists a zero-shot classifier cannot use: fewer than two classes,
    or duplicates (identical prompts give identical classifier columns, so the
    later class could never win the argmax). Case-insensitive, since the
    text towers of interest lower-case their input."""
    if len(names) < 2:
        raise DataError(f"{source}: a class list needs at least 2 names, got {len(names)}")
    first: dict[str, int] = {}
    for i, n in enumerate(names):
        j = first.setdefault(n.lower(), i)
        if j != i:
            raise DataError(f"{source}: duplicate class name {n!r} ({where[j]} and {where[i]})")
    return tuple(names)


def _names_from_text(path: Path, text: str) -> tuple[str, ...]:
    names, where = [], []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        names.append(line)
        where.append(f"line {lineno}")
    return _check_names(names, where, str(path))


def _parse_label(value: str, path: Path, lineno: int) -> int:
    text = value.strip()
    try:
        label = int(text)
    except ValueError:
        # pandas writes an int column holding NaN as floats ("3.0"); accept
        # integral floats rather than make users re-save the file.
        try:
            as_float = float(text)
        except ValueError:
            as_float = float("nan")
        if not as_float.is_integer():
            raise DataError(f"{path}, line {lineno}: label {value!r} is not an integer") from None
        label = int(as_float)
    if label < 0:
        raise DataError(f"{path}, line {lineno}: label {label} is negative")
    return label


def _names_from_csv(path: Path, text: str) -> tuple[str, ...]:
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None:
        raise DataError(f"{path}: empty CSV")
    columns = {h.strip().lower(): i for i, h in enumerate(header)}
    if "label" not in columns:
        raise DataError(f"{path}, line 1: no 'label' column in header {header}")
    name_col = next((c for c in _NAME_COLUMNS if c in columns), None)
    if name_col is None:
        raise DataError(
            f"{path}, line 1: no class-name column in header {header}; "
            f"expected one of {', '.join(_NAME_COLUMNS)}"
        )
    li, ni = columns["label"], columns[name_col]

    # A per-sample CSV (many rows per label) is fine as long as each label
    # always carries the same name; conflicting names mean the file is wrong.
    by_label: dict[int, tuple[str, int]] = {}
    for row in reader:
        lineno = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(li, ni):
            raise DataError(f"{path}, line {lineno}: expected {len(header)} fields, got {len(row)}")
        label = _parse_label(row[li], path, lineno)
        name = row[ni].strip()
        if not name:
            raise DataError(f"{path}, line {lineno}: empty class name for label {label}")
        if label in by_label and by_label[label][0] != name:
            prev, prev_line = by_label[label]
            raise DataError(
                f"{path}, line {lineno}: label {label} is {name!r} here but {prev!r} on line {prev_line}"
            )
        by_label.setdefault(label, (name, lineno))
    if not by_label:
        raise DataError(f"{path}: no rows after the header")
    k = max(by_label) + 1
    missing = [i for i in range(k) if i not in by_label]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise DataError(f"{path}: labels must be 0..{k - 1} without gaps; missing {shown}")
    ordered = [by_label[i] for i in range(k)]
    return _check_names([n for n, _ in ordered], [f"line {ln}" for _, ln in ordered], str(path))


def _is_file(text: str) -> bool:
    """`Path.is_file` that answers False instead of raising for strings that
    cannot be paths at all (an inline list of 134 names is "too long")."""
    try:
        return Path(text).is_file()
    except (OSError, ValueError):  # ENAMETOOLONG, embedded NUL
        return False


def load_classnames(spec: str | os.PathLike[str] | Iterable[str]) -> tuple[str, ...]:
    """Class names for a custom zero-shot run, label index = position.

    ``spec`` is one of:
    - a ``.csv`` file with a header holding ``label`` and a name column
      (``classname``, ``class_name``, ``name`` or ``diag``); names are ordered
      by label, which must run 0..K-1 without gaps. Several rows per label
      (a per-sample CSV) are allowed if they agree on the name;
    - any other file: one name per line, blank lines and ``#`` comments ignored;
    - a comma-separated string ``"a,b,c"`` (names cannot contain commas then);
    - a sequence of names.

    Raises `DataError` naming the file and line at fault, for fewer than two
    names, or for duplicate names.
    """
    if isinstance(spec, os.PathLike) or (isinstance(spec, str) and _is_file(spec)):
        path = Path(spec)
        if not path.is_file():
            raise DataError(f"{path}: class-name file not found")
        try:
            # utf-8-sig: spreadsheet exports often start with a BOM, which
            # would otherwise glue itself onto the first header or name.
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot read class-name file ({exc})") from None
        record_input(path)
        if path.suffix.lower() == ".csv":
            return _names_from_csv(path, text)
        return _names_from_text(path, text)

    if isinstance(spec, str):
        if "," not in spec:
            raise DataError(
                f"{spec!r} is neither an existing file nor a comma-separated list of class names"
            )
        parts = [p.strip() for p in spec.split(",")]
        if any(not p for p in parts):
            raise DataError(f"empty class name in comma-separated list {spec!r}")
        return _check_names(parts, [f"item {i + 1}" for i in range(len(parts))], "class list")

    names = [str(n).strip() for n in spec]
    if any(not n for n in names):
        raise DataError("empty class name in class list")
    return _check_names(names, [f"item {i + 1}" for i in range(len(names))], "class list")


# --------------------------------------------------------------------------
# Dataset codes -> reference label indices
# --------------------------------------------------------------------------
def code_to_label(benchmark: str | Benchmark, code: str) -> int:
    """Reference label index for a dataset code or class name.

    ``code_to_label("HAM-7", "nv") == 5`` (``"nevus"``),
    ``code_to_label("pad", "NEV") == 0``. The benchmark's own class names are
    accepted too, for every benchmark. Case and surrounding spaces are
    ignored. Raises `DataError` listing what is accepted.
    """
    bench = get_benchmark(benchmark)
    key = str(code).strip().lower()
    codes = _CODES.get(bench.name, {})
    if key in codes:
        return codes[key]
    for i, name in enumerate(bench.classnames):
        if name.lower() == key:
            return i
    if codes:
        accepted = f"codes {', '.join(sorted(codes))} or a class name ({', '.join(bench.classnames)})"
    else:
        accepted = f"one of its {bench.num_classes} class names"
    raise DataError(f"unknown {bench.name} code {code!r}; expected {accepted}")
