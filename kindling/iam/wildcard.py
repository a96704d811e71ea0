"""IAM's wildcards (``*`` any run of characters, ``?`` one character), matched in time linear in the text.

A pattern is compiled once into a bit-parallel automaton (one bit per pattern position, the text read once):
no backtracking, so a hostile pattern such as ``a*a*a*...b`` costs one pass over the value, whatever it holds.
"""

from __future__ import annotations

from functools import lru_cache


class Pattern:
    __slots__ = ("_exact", "_any", "_masks", "_query", "_stars", "_accept")

    def __init__(self, pattern: str) -> None:
        while "**" in pattern:
            pattern = pattern.replace("**", "*")
        self._any = pattern == "*"
        self._exact = pattern if "*" not in pattern and "?" not in pattern else None
        masks: dict[str, int] = {}
        query = stars = 0
        for i, c in enumerate(pattern):
            if c == "*":
                stars |= 1 << i
            elif c == "?":
                query |= 1 << i
            else:
                masks[c] = masks.get(c, 0) | 1 << i
        self._masks = {c: m | query for c, m in masks.items()}
        self._query, self._stars, self._accept = query, stars, 1 << len(pattern)

    def match(self, text: str) -> bool:
        if self._any:
            return True
        if self._exact is not None:
            return text == self._exact
        stars, masks, query = self._stars, self._masks, self._query
        state = 1 | (1 & stars) << 1
        for c in text:
            state = ((state & masks.get(c, query)) << 1) | (state & stars)
            if not state:
                return False
            state |= (state & stars) << 1  # a star may match nothing (consecutive stars were merged)
        return bool(state & self._accept)


@lru_cache(maxsize=4096)
def compile_pattern(pattern: str) -> Pattern:
    return Pattern(pattern)


def match(pattern: str, text: str, ignore_case: bool = False) -> bool:
    if ignore_case:
        pattern, text = pattern.lower(), text.lower()
    return compile_pattern(pattern).match(text)
