"""The one exception type for mistakes a user can fix (bad config, missing data, wrong paths).

Entry points catch it and print its message alone, without a traceback. A message names the problem
and the fix in one paragraph.
"""


import sys
from typing import Callable


class RecipeError(Exception):
    """A user-fixable problem: the message says what is wrong and how to fix it.

    A RecipeError raised in a torch DataLoader worker process reaches the main process re-made from the
    worker's traceback text ("Caught RecipeError in DataLoader worker process 0. Original Traceback ...");
    the message is cut back to the worker's own, so it still prints as one paragraph."""

    def __init__(self, message: str = ""):
        if isinstance(message, str) and message.startswith(f"Caught {type(self).__name__} in DataLoader worker"):
            message = message.rstrip().rsplit(f"{type(self).__name__}: ", 1)[-1]
        super().__init__(message)


EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a process ended by Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM (a scheduler's pre-emption, Composer's launcher stopping its ranks)


def describe(err: BaseException, width: int = 200) -> str:
    """``"TypeName: first line of the message"`` (cut to ``width``), for one-paragraph error messages."""
    return f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:width]}"


def report_errors(action: Callable[[], object], resume_hint: str = "") -> int:
    """Run ``action`` for a command-line entry point: its int result (or 0) is the exit status; a
    RecipeError is printed as one paragraph, without a traceback, and gives status 2; Ctrl-C or SIGTERM
    gives one line (with ``resume_hint``, how to continue) and status 130 or 143. (Once Composer is
    imported, its signal handler turns both signals into ``SystemExit(128 + signal)`` instead of
    KeyboardInterrupt.)"""
    try:
        result = action()
    except RecipeError as err:
        print(f"\nerror: {err}\n", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    except BaseException as err:
        # A signal that lands inside a library's cleanup (torch.save closing its zip file) comes out as that
        # library's own error raised while the stop was handled: the stop is then in the error's context.
        # Anything else is raised again untouched.
        stop = _stop_in_context(err)
        if stop is None:
            raise
        status = EXIT_INTERRUPTED if isinstance(stop, KeyboardInterrupt) else stop.code
        _print_stopped("interrupted (Ctrl-C)" if status == EXIT_INTERRUPTED else "stopped by SIGTERM", resume_hint)
        return status
    return result if isinstance(result, int) else 0


def _stop_in_context(err: BaseException) -> "BaseException | None":
    """The Ctrl-C or SIGTERM (KeyboardInterrupt, or Composer's ``SystemExit(130 or 143)``) that ``err`` is or
    was raised while handling, else None."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, KeyboardInterrupt) or (
                isinstance(err, SystemExit) and err.code in (EXIT_INTERRUPTED, EXIT_TERMINATED)):
            return err
        err = err.__context__
    return None


def _print_stopped(how: str, resume_hint: str) -> None:
    print(f"\n{how}. Outputs get their final names only when complete, so none was left half-written"
          f"{'; ' + resume_hint if resume_hint else ''}.\n", file=sys.stderr, flush=True)
