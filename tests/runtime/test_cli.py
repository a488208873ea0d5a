"""runtime.cli: one-line errors and exit codes shared by every command line."""

import pytest

from runtime.cli import ArgumentParser, non_negative_number, require, run, whole_number
from runtime.errors import BackendUnavailableError, GateError, InputError


def test_value_parsers():
    assert whole_number(1)("3") == 3 and whole_number(0, 5)("5") == 5
    for bad in ("0", "x", "1.5"):
        with pytest.raises(ValueError):
            whole_number(1)(bad)
    with pytest.raises(ValueError):
        whole_number(0, 5)("6")
    assert non_negative_number("0.5") == 0.5
    for bad in ("-1", "inf", "nan"):
        with pytest.raises(ValueError):
            non_negative_number(bad)


def test_argparse_errors_are_one_line_with_exit_2(capsys):
    p = ArgumentParser(prog="tool")
    p.add_argument("--n", type=whole_number(1))
    with pytest.raises(SystemExit) as info:
        p.parse_args(["--n", "0"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "argument --n: invalid whole number >= 1 value: '0'" in err


@pytest.mark.parametrize("error, code", [(InputError("bad"), 2), (GateError("gate"), 3), (BackendUnavailableError("no"), 4),
                                         (KeyboardInterrupt(), 130)])
def test_run_maps_errors_to_exit_codes(error, code, capsys):
    def main(argv):
        raise error

    assert run(main, "tool") == code
    assert capsys.readouterr().err.startswith("tool: ")


def test_require_names_the_extra_to_install():
    require("tool", {"numpy": "core"})
    with pytest.raises(BackendUnavailableError, match=r"tool needs no_such_module_xyz, not installed here: pip install -e '\.\[bench\]'"):
        require("tool", {"numpy": "core", "no_such_module_xyz": "bench"})
