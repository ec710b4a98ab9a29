"""Entry-point wrapper shared by every command-line tool."""

import sys
from typing import Callable, NoReturn

from d2seg.errors import D2SegError

USER_ERROR_EXIT_CODE = 2


def run_cli(main: Callable[[], int | None]) -> NoReturn:
    """Run ``main`` and exit; a :class:`D2SegError` becomes one line on stderr and exit code 2.

    User mistakes get a message that names the file or key and the fix, never a traceback.
    """
    try:
        code = main()
    except D2SegError as e:
        print(f"error: {user_message(e)}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT_CODE)
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
