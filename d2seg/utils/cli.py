"""Entry-point wrapper shared by every command-line tool."""

import signal
import sys
from typing import Callable, NoReturn

from d2seg.errors import D2SegError

USER_ERROR_EXIT_CODE = 2


class Interrupted(Exception):
    """A run that a signal stopped after it saved what it needs to continue (not an error).

    :func:`run_cli` prints the message (one line) and exits ``128 + signum``, what a shell
    reports for a process the signal ended: 130 for SIGINT, 143 for SIGTERM.
    """

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def __reduce__(self):  # launch() sends it from a DDP worker to the parent process
        return type(self), (self.signum, str(self))


INTERRUPT_EXIT_CODES = (128 + signal.SIGINT, 128 + signal.SIGTERM)


def run_cli(main: Callable[[], int | None]) -> NoReturn:
    """Run ``main`` and exit; a :class:`D2SegError` becomes one line on stderr and exit code 2,
    an :class:`Interrupted` its one line and ``128 + signal``; a bare Ctrl-C exits 130.

    User mistakes get a message that names the file or key and the fix, never a traceback.
    """
    try:
        code = main()
    except D2SegError as e:
        print(f"error: {user_message(e)}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT_CODE)
    except Interrupted as e:
        print(str(e), file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


def user_message(error: D2SegError) -> str:
    """The error's message on one line.

    An error raised in a DataLoader worker comes back with the worker's traceback folded into
    its message; only the original message (the traceback's last line) is kept.
    """
    text = str(error)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(text.split())
