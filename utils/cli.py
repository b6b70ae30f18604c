"""Command-line plumbing shared by the entry scripts: help format, value checks and error exit
(the model/data flags live in :mod:`core.entry`, the value rules in :mod:`utils.validate`)."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from utils import validate

TRACEBACK_ENV = "MODEL_DOCTOR_TRACEBACK"
INTERRUPTED_STATUS = 130   # 128 + SIGINT, what a shell reports for Ctrl-C
# Mistakes in the command line or the files it names. The code raises these with a message
# naming the argument or file, so the message alone tells the user what to fix.
USER_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
               ValueError, LookupError)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: …)`` to each flag's help unless the help already states its
    default in words (``(default: the dataset's)``), so every default is shown once."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        return text if "(default:" in text else super()._get_help_string(action)


def run_main(main: Callable[[argparse.Namespace], object], parser: argparse.ArgumentParser,
             argv: list[str] | None = None) -> None:
    """Parse the command line, check its values, run ``main(args)`` and exit.

    A bad flag value (type, choice, or a rule of :data:`utils.validate.RULES`) prints
    ``<prog>: error: argument --flag: ...`` on one line and exits with status 2. Ctrl-C prints
    ``<prog>: interrupted`` (after a newline that ends a progress bar) and exits with status
    130. A user error (:data:`USER_ERRORS`) prints ``<prog>: error: <message>`` on one line
    to stderr and exits with status 1;
    ``MODEL_DOCTOR_TRACEBACK=1`` lets the exception through with its traceback. Any other
    exception is a bug and keeps its traceback. An ``int`` returned by ``main`` is the exit
    status.
    """
    if parser.epilog is None:
        parser.epilog = f"Errors print one line; {TRACEBACK_ENV}=1 shows the traceback."
    args = validate.parse_args(parser, argv)
    try:
        status = main(args)
    except KeyboardInterrupt:
        if os.environ.get(TRACEBACK_ENV, "").strip() not in ("", "0"):
            raise
        print(f"\n{parser.prog}: interrupted", file=sys.stderr)
        sys.exit(INTERRUPTED_STATUS)
    except USER_ERRORS as exc:
        if os.environ.get(TRACEBACK_ENV, "").strip() not in ("", "0"):
            raise
        text = exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], str) else str(exc)
        print(f"{parser.prog}: error: {' '.join(text.split()) or type(exc).__name__}",
              file=sys.stderr)
        sys.exit(1)
    sys.exit(status if isinstance(status, int) and not isinstance(status, bool) else 0)
