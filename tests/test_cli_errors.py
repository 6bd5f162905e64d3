"""Every CLI answers a malformed value with one line on stderr and exit 2, never a traceback."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import pytest
from helpers import run_module

from dynprune.base import ConfigError, option
from dynprune.config import parse_cli

#: the module whose main() each ``python -m`` name runs
MAINS = {
    "dynprune.bench": "dynprune.bench.__main__",
    "dynprune.prune": "dynprune.prune.__main__",
    "dynprune.export": "dynprune.export",
    "dynprune.cascade": "dynprune.cascade.__main__",
    "agents.bench": "agents.bench",
}


@pytest.mark.parametrize(
    ("command", "flag"),
    [
        (("dynprune.bench", "pruned", "x.pt", "--batch-sizes", "1,a"), "--batch-sizes"),
        (("dynprune.bench", "pruned", "x.pt", "--threads", "two"), "--threads"),
        (("dynprune.bench", "dynamic", "--targets", "0.5,x"), "--targets"),
        (("dynprune.bench", "dynamic", "--min-run-time", "fast"), "--min-run-time"),
        (("dynprune.bench", "dynamic", "--batch-sizes", "1,0"), "--batch-sizes"),
        (("dynprune.bench", "dynamic", "--models", ""), "--models"),  # nothing to time: not an empty table
        (("dynprune.bench", "pruned", "x.pt", "--batch-sizes", "0"), "--batch-sizes"),
        (("dynprune.bench", "overhead", "--steps", "abc"), "--steps"),
        (("dynprune.bench", "overhead", "--gates", "ste,nope"), "--gates"),
        (("dynprune.bench", "ddp", "--procs", "1,x"), "--procs"),
        (("dynprune.bench", "ddp", "--epochs", "1.5"), "--epochs"),
        (("dynprune.bench", "ddp", "--procs", "1,3"), "--batch-size 128 must be divisible by every --procs"),
        (("dynprune.prune", "sensitivity", "--init", "x.pt", "--ratios", "0.1,zz"), "--ratios"),
        (("dynprune.prune", "sensitivity", "--init", "x.pt", "--val-subset", "abc"), "--val-subset"),
        (("dynprune.export", "x.pt", "--onnx", "y.onnx", "--batch", "z"), "--batch"),
        (("dynprune.export", "x.pt"), "--onnx"),
        (("dynprune.cascade", "a.pt", "b.pt", "--target-macs", "abc"), "--target-macs"),
        (("dynprune.cascade", "a.pt", "b.pt", "--target-macs", "0.3", "--threads", "0"), "--threads"),
        (("agents.bench", "--init", "x.pt", "--target-macs", "abc"), "--target-macs"),
        (("agents.bench", "--target-macs", "0.5"), "--init"),
    ],
    ids=lambda c: " ".join(c[1:]) if isinstance(c, tuple) else None,
)
def test_a_malformed_value_is_one_line_naming_the_flag(capsys, command, flag):
    # each CLI's main() in this process (the parsing is all in it; a subprocess per case would add minutes of
    # interpreter start-up to CI): the one ``python -m`` case below checks the shell path
    main = importlib.import_module(MAINS[command[0]]).main
    try:
        code = main(list(command[1:]))
    except SystemExit as exc:
        code = exc.code
    stderr = capsys.readouterr().err
    lines = stderr.strip().splitlines()
    assert code == 2, stderr[-1000:]
    assert len(lines) == 1 and lines[0].strip(), stderr
    assert ": error: " in lines[0] and flag in lines[0] and "Traceback" not in stderr


def test_from_the_shell_too():
    proc = run_module("dynprune.bench", "pruned", "x.pt", "--batch-sizes", "1,a", timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--batch-sizes" in proc.stderr, proc.stderr


@dataclass
class _Positional:
    sizes: list[int] = option([], "sizes to use", positional=True)
    name: str = option("", "a name", positional=True)
    scale: float = option(1.0, "a flag after them")
    paths: list[str] = option([], "repeatable list", repeatable=True)

    def validate(self) -> None:
        if min(self.sizes) < 1:
            raise ConfigError(f"sizes must be >= 1, got {self.sizes}")


def test_parse_cli_positional_fields_are_coerced_validated_and_required(capsys):
    cfg = parse_cli(_Positional, ["1", "2", "3", "a,b", "--scale", "0.5"], "prog", "d")
    assert cfg.sizes == [1, 2, 3] and cfg.name == "a,b" and cfg.scale == 0.5 and cfg.paths == []
    cfg = parse_cli(_Positional, ["4", "n", "--paths", "a,b", "--paths", "c"], "prog", "d")
    assert cfg.sizes == [4] and cfg.paths == ["a", "b", "c"]
    for argv, needle in [
        (["1", "x", "n"], "argument sizes: expects int, got 'x'"),
        (["0", "n"], "sizes must be >= 1, got [0]"),
        (["--scale", "2"], "the following arguments are required: sizes, name"),
    ]:
        with pytest.raises(SystemExit) as exc:
            parse_cli(_Positional, argv, "prog", "d")
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("prog: error: ") and needle in err, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("--gate topk --tau-start 3", "--tau-start is an option of --gate gumbel; this run is --gate topk"),
        (
            "--prune l1-filter --width-choices 0.5,1",
            "--width-choices is an option of --gate width; this run is --prune",
        ),
        ("--gate topk --hard", "--hard is an option of --prune runs; this run is --gate topk"),
        ("--budget-weight 3", "--budget-weight is an option of --gate runs; this run is a dense run"),
    ],
)
def test_a_flag_of_a_method_the_run_does_not_use_is_one_line_not_ignored(capsys, args, message):
    """Before, such a flag was read and silently ignored (a topk run with --tau-start 3 trained as without it)."""
    from dynprune.catalog import parse_train_cli

    with pytest.raises(SystemExit) as exit_info:
        parse_train_cli(args.split(), "python -m dynprune.train", "")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    for used in (
        "--gate topk --budget-weight 3",
        "--prune sfp --prune-criterion l2-filter",
        "--gate width --width-tau 2",
    ):
        parse_train_cli(used.split(), "python -m dynprune.train", "")  # the run's own method's flags: accepted
