"""Concept settings errors name the setting (`param`), and each concept door names its own flag for it."""
import numpy as np
import pytest

from panderm.cli import command_flags
from panderm.cli.concepts import FLAGS as CLI_FLAGS
from panderm.cli.doors import door_flags
from panderm.compat import concept_doors
from panderm.compat.concept_doors import FLAGS as DOOR_FLAGS
from panderm.errors import DataError

CLI_INTERVENE, CLI_REPORT = command_flags("concepts", "intervene"), command_flags("concepts", "report")
DOOR_INTERVENE = door_flags(concept_doors.build_intervention_parser(""), DOOR_FLAGS)  # 4_intervention_CBM.py
DOOR_VIZ = door_flags(concept_doors.build_concept_viz_parser(""), DOOR_FLAGS)  # 2_global_concept_viz_*.py
from panderm.tasks.concepts.cbm_files import _select
from panderm.tasks.concepts.html_report import select_latents
from panderm.tasks.concepts.retrieve import class_importance


def _raised(fn, *args, **kw) -> DataError:
    with pytest.raises(DataError) as err:
        fn(*args, **kw)
    assert "--" not in str(err.value)
    return err.value


def test_intervention_settings():
    coef = np.ones((1, 4))
    err = _raised(_select, coef, "nearest", 2, "hair", None, {})
    assert err.param == "method" and "'nearest'" in str(err)
    assert err.render(CLI_INTERVENE).endswith("(set it with --method)") and err.render(DOOR_INTERVENE).endswith(
        "(set it with --method)")
    err = _raised(_select, coef, "topk", 0, "hair", None, {})
    assert err.param == "top_n" and str(err).endswith("got 0")
    assert err.render(CLI_INTERVENE).endswith("(set it with --top-n)")
    assert err.render(DOOR_INTERVENE).endswith("(set it with --top_n)")
    err = _raised(_select, coef, "matching", 2, "  ", None, {})
    assert err.param == "concept" and err.render(DOOR_INTERVENE).endswith("(set it with --concept)")


def test_report_and_importance_settings():
    err = _raised(select_latents, np.ones((3, 4)), max_cards=0)
    assert err.param == "max_cards" and err.render(CLI_REPORT).endswith("(set it with --max-cards)")
    err = _raised(class_importance, np.ones((4, 3)), np.array([0, 1, 0, 1]), topk=0)
    assert err.param == "topk" and err.render(DOOR_VIZ).endswith("(set it with --topk)")


def test_every_flag_the_maps_name_is_a_flag_of_their_parsers():
    """A map naming a flag its doors do not have would send the user to a wrong flag."""
    import importlib.util
    from pathlib import Path

    from panderm.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    concepts = sub.choices["concepts"]
    cli_opts = {o for a in concepts._actions if a.__class__.__name__ == "_SubParsersAction"
                for p in a.choices.values() for b in p._actions for o in b.option_strings}
    assert {f.split()[0] for f in CLI_FLAGS.values()} <= cli_opts
    door_opts = set()
    for path in (Path(__file__).resolve().parents[1] / "automated-concept-discovery").glob("*.py"):
        spec = importlib.util.spec_from_file_location(path.stem.replace("-", "_"), path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        door_opts |= {o for a in module.build_parser()._actions for o in a.option_strings}
    assert set(DOOR_FLAGS.values()) <= door_opts
