"""Did-you-mean hints for messages: the one home of how topo guesses a misspelling.

Standard library only, imported on first use: instances import ``topo.targets``, which
uses it when a target cannot be found.
"""

from __future__ import annotations

from collections.abc import Iterable


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice closest to ``word``, if one is close enough to be what was meant."""
    import difflib

    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(word: str, choices: Iterable[str], prefix: str = "") -> str:
    """`` (did you mean 'x'?)`` (``'prefix.x'`` with a prefix) when a choice is close to
    ``word``, else ``""``."""
    found = closest(word, choices)
    if found is None:
        return ""
    return f" (did you mean {(prefix + '.' if prefix else '') + found!r}?)"
