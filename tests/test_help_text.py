"""Issue 18: `--help` of every panderm subcommand and door: help text for every option, each default shown once."""
import argparse
import re

from test_first_use_docs import parsers  # noqa: F401  (the fixture: every parser, the segmentation door included)


# -- --help: help text for every option, each default shown once ---------------------------------------------------

def _options(parsers):
    for name, parser in parsers.items():
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            yield name, parser, action


def _rendered_help(parser, action) -> str:
    formatter = parser._get_formatter()
    return formatter._expand_help(action) if action.help else ""


def test_every_option_has_help_text(parsers):
    missing = [f"{name}: {'/'.join(a.option_strings) or a.dest}" for name, _, a in _options(parsers)
               if not (a.help or "").strip() or a.help == argparse.SUPPRESS]
    assert not missing, f"{len(missing)} options without help:\n" + "\n".join(missing)


def test_each_default_is_shown_once(parsers):
    twice = []
    for name, parser, action in _options(parsers):
        text = _rendered_help(parser, action)
        if len(re.findall(r"\bdefault\b", text, flags=re.I)) > 1:
            twice.append(f"{name}: {'/'.join(action.option_strings)}: {text}")
    assert not twice, "defaults shown more than once:\n" + "\n".join(twice)


def test_meaningful_defaults_are_shown(parsers):
    """An option with a value default (not None, not a store_true/false flag) says it in --help."""
    hidden = []
    for name, parser, action in _options(parsers):
        if action.default in (None, argparse.SUPPRESS) or isinstance(action.default, bool) or not action.option_strings:
            continue
        if action.default in ("", [], ()):
            continue
        text = _rendered_help(parser, action)
        if not re.search(r"\bdefault", text, flags=re.I):
            hidden.append(f"{name}: {'/'.join(action.option_strings)} (default {action.default!r})")
    assert not hidden, f"{len(hidden)} defaults not shown:\n" + "\n".join(hidden)
