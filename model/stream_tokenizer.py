"""Tokenize text that arrives in chunks: any chunking reads exactly `tokenize(whole text)`.

tokenize() looks across characters but never across whitespace, with one exception: a word
ending in a period may be an abbreviation only when the next word starts with a digit
(`no. 1` -> `no.`, `no.` -> `no .`). Every other rule (quotes opening after whitespace, `1,000`,
`...`, the Greek final sigma of str.lower) stops at whitespace. So text up to the last
whitespace can be tokenized as soon as it arrives, provided its last word does not depend on
the word after it; when it does, that word waits for the next one. The unfinished word after
the last whitespace waits for whitespace or the end of the stream.

>>> stream = StreamTokenizer(max_held_chars=5000)
>>> stream.feed("I do"), stream.feed("n't li"), stream.feed("ke it."), stream.finish()
(['i'], ['do', "n't"], ['like'], ['it', '.'])
"""

from __future__ import annotations

from .tokenizer import tokenize

__all__ = ["StreamTokenizer", "HeldTextTooLong"]

# A word followed by this probes whether a word's tokens depend on the next word: tokenize()
# asks only whether the next word starts with a digit.
_DIGIT_PROBE = " 0"


class HeldTextTooLong(ValueError):
    """The stream has sent more characters without a word boundary than it may hold."""

    def __init__(self, held_chars: int, limit: int) -> None:
        self.held_chars = held_chars
        self.limit = limit
        super().__init__(f"{held_chars} characters arrived without whitespace to end a word; "
                         f"the limit is {limit} (the longest text a request may carry)")


class StreamTokenizer:
    """Incremental tokenize(): feed chunks, get the tokens each completes; finish() reads the rest.

    At most `max_held_chars` characters are held between chunks (the unfinished word, and a
    word that waits for the next one); a chunk that would make it more raises HeldTextTooLong.
    """

    def __init__(self, max_held_chars: int) -> None:
        if max_held_chars < 1:
            raise ValueError(f"max_held_chars must be at least 1, got {max_held_chars}")
        self.max_held_chars = max_held_chars
        self._held = ""  # text not yet tokenized: no whitespace in it except one after a waiting word

    @property
    def held_chars(self) -> int:
        return len(self._held)

    def feed(self, chunk: str) -> list[str]:
        """The tokens this chunk completes, in reading order (often none, or those of a word)."""
        boundary = _after_last_whitespace(chunk)
        if boundary == 0:  # no whitespace: the unfinished word grows
            self._hold(self._held + chunk)
            return []
        complete = (self._held + chunk[:boundary]).rstrip()
        rest = chunk[boundary:]
        split = _after_last_whitespace(complete)
        last_word = complete[split:]
        last_tokens = tokenize(last_word)
        # Everything before the last word is read with its true next word (the last one) in view.
        tokens = tokenize(complete) if split else list(last_tokens)
        if _depends_on_next_word(last_word, last_tokens):
            del tokens[len(tokens) - len(last_tokens):]
            self._hold(last_word + " " + rest)
        else:
            self._hold(rest)
        return tokens

    def finish(self) -> list[str]:
        """The end of the stream: the tokens of whatever is held (the unfinished word)."""
        tokens = tokenize(self._held)
        self._held = ""
        return tokens

    def _hold(self, text: str) -> None:
        if len(text) > self.max_held_chars:
            raise HeldTextTooLong(len(text), self.max_held_chars)
        self._held = text


def _after_last_whitespace(text: str) -> int:
    """The index just after the last whitespace character of `text` (0 when there is none)."""
    for index in range(len(text) - 1, -1, -1):
        if text[index].isspace():
            return index + 1
    return 0


def _depends_on_next_word(word: str, tokens: list[str]) -> bool:
    """Whether `word`'s tokens can change with the word after it (a period that may belong to
    an abbreviation, `no.` before a number). Probed through tokenize() itself, so it follows
    the rules wherever they go."""
    if "." not in word and "\u2026" not in word:  # the only rule that looks ahead reads a period
        return False
    return tokenize(word + _DIGIT_PROBE)[:-1] != tokens
