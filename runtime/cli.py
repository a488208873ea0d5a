"""What every command line of the project shares: one-line errors and exit codes.

Exit codes: 0 success, 1 an unexpected failure (a bug: traceback shown), 2 a usage or input
problem the user can fix, a full disk included (one line on stderr, nothing written), 3 an accuracy
gate failed (one line, nothing written), 4 a backend is missing, 130 interrupted.
"""

from __future__ import annotations

import argparse
import errno
import importlib.util
import logging
import sys
from collections.abc import Callable, Mapping

from .errors import BackendUnavailableError, DeployError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports errors on one line (``prog: error: ...``) with exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse hook
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def whole_number(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """argparse type: a whole number in lo..hi (its ValueError becomes argparse's one-line error naming the flag)."""

    def parse(text: str) -> int:
        value = int(text)
        if value < lo or (hi is not None and value > hi):
            raise ValueError
        return value

    parse.__name__ = f"whole number >= {lo}" if hi is None else f"whole number in {lo}..{hi}"
    return parse


def non_negative_number(text: str) -> float:
    """argparse type: a finite number >= 0."""
    value = float(text)
    if not 0 <= value < float("inf"):
        raise ValueError
    return value


non_negative_number.__name__ = "number >= 0"


def require(prog: str, modules: Mapping[str, str]) -> None:
    """For tools with optional dependencies, before any work: ``modules`` maps each module the tool needs to
    the extra that installs it; a missing one raises BackendUnavailableError (exit 4) naming the extra."""
    missing = {name: extra for name, extra in modules.items() if importlib.util.find_spec(name) is None}
    if missing:
        extras = ",".join(sorted(set(missing.values())))
        raise BackendUnavailableError(f"{prog} needs {', '.join(missing)}, not installed here: "
                                      f"pip install -e '.[{extras}]' in the checkout (make bench installs them all)")


def setup_logging(verbose: bool) -> None:
    """Our own loggers at INFO (DEBUG with -v); libraries' chatter only from WARNING up."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
    for name in ("runtime", "export"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)


def no_space(exc: BaseException) -> OSError | str | None:
    """The disk-full error behind ``exc`` (its chain of causes, or, for an error that crossed a process boundary
    or a library's wrapper, its message), else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            return exc
        if "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc):
            return str(exc)
        exc = exc.__cause__ or exc.__context__
    return None


def run(main: Callable[[list[str] | None], int], prog: str, argv: list[str] | None = None) -> int:
    try:
        return main(argv)
    except DeployError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        full = no_space(exc)
        if full is None:
            raise
        where = f" writing {full.filename}" if isinstance(full, OSError) and full.filename else ""
        print(f"{prog}: error: no space left on the device{where}; nothing was written (temporary files removed). "
              "Free space there, or write elsewhere, and run again", file=sys.stderr)
        return EXIT_USAGE
