"""Every app folder (and the core's ``xumx-slicq`` command) is runnable as ``python -m <folder> --help`` from the
repository root."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "module", ["xumx_slicq", "train", "export", "submission", "benchmark", "benchmark.transform_speed",
               "benchmark.transform_demo", "benchmark.model_summary"]
)
def test_help(module):
    proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout


def test_unknown_benchmark_subcommand_fails():
    proc = subprocess.run([sys.executable, "-m", "benchmark", "nope"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0 and "invalid choice" in proc.stderr


def test_transform_demo_on_a_file(tmp_path):
    sf = pytest.importorskip("soundfile")
    import numpy as np

    audio = np.random.default_rng(0).uniform(-0.5, 0.5, (44100, 2)).astype("float32")
    wav = tmp_path / "noise.wav"
    sf.write(wav, audio, 44100)
    png = tmp_path / "plot.png"
    proc = subprocess.run([sys.executable, "-m", "benchmark", "transform-demo", str(wav), "--plot", str(png)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "263 bins in 70 blocks" in proc.stdout
    assert png.stat().st_size > 10_000


def test_transform_demo_reports_unreadable_file(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    proc = subprocess.run([sys.executable, "-m", "benchmark", "transform-demo", str(bad)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "bad.wav" in proc.stderr


def test_every_benchmark_subcommand_is_a_module_with_main():
    import importlib

    from benchmark.__main__ import SUBCOMMANDS

    for name, (module, _) in SUBCOMMANDS.items():
        assert callable(getattr(importlib.import_module(module), "main", None)), name


# --------------------------------------------------------------------------------------------------------------
# every option of every command says what it does and what it defaults to
# --------------------------------------------------------------------------------------------------------------

CLI_FOLDERS = ("xumx_slicq", "train", "export", "submission", "benchmark")
# parsers that no user sees: the argument lists of child processes a command starts itself
INTERNAL_PARSERS = {"export.profile"}


class _Captured(Exception):
    def __init__(self, parser):
        super().__init__("parser captured")
        self.parser = parser


def _cli_modules():
    """Module names of every file in the core and the apps that builds an argparse parser."""
    found = []
    for folder in CLI_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "ArgumentParser(" in path.read_text(encoding="utf-8"):
                rel = path.relative_to(ROOT).with_suffix("")
                found.append(".".join(rel.parts))
    return found


def _parser_of(module_name, monkeypatch):
    """The parser ``module.main`` builds, caught when it parses (nothing after the parse runs)."""
    import argparse
    import importlib

    def capture(self, *args, **kwargs):
        raise _Captured(self)

    for name in ("parse_args", "parse_known_args", "parse_intermixed_args"):
        monkeypatch.setattr(argparse.ArgumentParser, name, capture)
    main = getattr(importlib.import_module(module_name), "main", None)
    assert callable(main), f"{module_name} builds a parser but has no main(argv); list it in INTERNAL_PARSERS?"
    try:
        main(["--probe"])
    except _Captured as caught:
        return caught.parser
    raise AssertionError(f"{module_name}.main(argv) returned without parsing its arguments")


def _options(parser, where):
    """``(where, parser, action)`` of every argument, subcommands' included (help actions left out)."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, f"{where} {name}")
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield where, parser, action


def _renderings(value):
    """Ways a help text may spell a default value."""
    if isinstance(value, (list, tuple)):
        parts = [f"{v:g}" if isinstance(v, float) else str(v) for v in value]
        return {" ".join(parts), ", ".join(parts), str(list(value))}
    if isinstance(value, float):
        return {f"{value:g}", repr(value), f"{value:.0e}".replace("e-0", "e-")}
    return {str(value)}


def shows_default(parser, action) -> bool:
    """Whether ``action``'s help, as ``--help`` prints it, gives its default: the word "default", or the value in
    parentheses as in ``(64)``. Options without a meaningful default (required, positional, None, a flag's False)
    need none."""
    import argparse

    default = action.default
    if (action.required or not action.option_strings or default is None or default is argparse.SUPPRESS
            or (default is False and action.nargs == 0)):
        return True
    text = parser._get_formatter()._expand_help(action)
    return "default" in text.lower() or any(f"({r}" in text for r in _renderings(default))


def undocumented(parser, where):
    """``[(where, option, why)]`` for every argument without help text or without its default in the help."""
    import argparse

    bad = []
    for at, owner, action in _options(parser, where):
        name = "/".join(action.option_strings) or action.dest
        if action.help == argparse.SUPPRESS:
            continue
        if not (action.help or "").strip():
            bad.append((at, name, "no help"))
        elif not shows_default(owner, action):
            bad.append((at, name, f"help does not give the default {action.default!r}"))
    return bad


def test_every_cli_module_is_found():
    modules = _cli_modules()
    for expected in ("train.trainer", "train.synth", "train.stats", "train.pack", "export.__main__",
                     "submission.__main__", "benchmark.__main__", "benchmark.boxplot"):
        assert expected in modules


@pytest.mark.parametrize("module", [m for m in _cli_modules() if m not in INTERNAL_PARSERS])
def test_every_option_has_help_and_default(module, monkeypatch):
    parser = _parser_of(module, monkeypatch)
    assert undocumented(parser, module) == []


def test_the_help_check_can_fail():
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--fine", type=int, default=3, help="a count (3)")
    p.add_argument("--also-fine", type=float, default=1e-3, help="a rate (default %(default)s)")
    p.add_argument("--flag", action="store_true", help="a switch")
    p.add_argument("--bare", type=int, default=262)
    p.add_argument("--quiet-default", default="bark", help="a scale")
    sub = p.add_subparsers(dest="cmd").add_parser("run")
    sub.add_argument("--nested")
    assert undocumented(p, "p") == [("p", "--bare", "no help"),
                                    ("p", "--quiet-default", "help does not give the default 'bark'"),
                                    ("p run", "--nested", "no help")]


def test_train_help_shows_the_model_options():
    proc = subprocess.run([sys.executable, "-m", "train", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    flat = " ".join(proc.stdout.split())
    for text in ("--fscale {bark,mel,cqlog,vqlog,lin} sliCQ frequency scale (xumx-slicq only; default bark)",
                 "--epochs EPOCHS most epochs to run (default 1000)", "(default 42)"):
        assert text in flat
