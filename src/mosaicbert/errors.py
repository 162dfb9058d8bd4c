"""The one exception type for mistakes a user can fix (bad config, missing data, wrong paths).

Entry points catch it and print its message alone, without a traceback. A message names the problem
and the fix in one paragraph.
"""


class RecipeError(Exception):
    """A user-fixable problem: the message says what is wrong and how to fix it."""
