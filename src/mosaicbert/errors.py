"""The one exception type for mistakes a user can fix (bad config, missing data, wrong paths).

Entry points catch it and print its message alone, without a traceback. A message names the problem
and the fix in one paragraph.
"""


import sys
from typing import Callable


class RecipeError(Exception):
    """A user-fixable problem: the message says what is wrong and how to fix it."""


EXIT_USER_ERROR = 2


def describe(err: BaseException, width: int = 200) -> str:
    """``"TypeName: first line of the message"`` (cut to ``width``), for one-paragraph error messages."""
    return f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:width]}"


def report_errors(action: Callable[[], object]) -> int:
    """Run ``action`` for a command-line entry point: its int result (or 0) is the exit status; a
    RecipeError is printed as one paragraph, without a traceback, and gives status 2."""
    try:
        result = action()
    except RecipeError as err:
        print(f"\nerror: {err}\n", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    return result if isinstance(result, int) else 0
