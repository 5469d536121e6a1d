"""Raw text to SST/PTB-style tokens: the same rules at train time and at serve time.

The training data (SST-2) is already lower-cased and tokenized the Penn Treebank way
(`it 's`, `does n't`, `-lrb-`). Serving receives raw text, so this module re-creates
those conventions; a word the vocabulary knows must come out spelled the way SST spells it.
Already-tokenized SST text passes through unchanged. That holds for SST's own spellings, not
for any text: re-tokenizing arbitrary tokens can split them further (`0.n't`).
"""

from __future__ import annotations

import re

__all__ = ["tokenize", "normalize_sst_tokens"]

# Abbreviations that keep their period (SST writes `mr.`, `vs.`, `etc.`); anything else
# loses a trailing period to a separate `.` token, as a sentence end would.
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr vs etc jr sr inc co bros wash sept al st mt prof ltd gen gov sen rep "
    "capt col lt sgt jan feb aug oct nov dec".split()
)
# Words that legitimately start or end with an apostrophe in SST (`'70s`, `'em`, `ol'`):
# their apostrophe is part of the word, not a quote mark.
_APOSTROPHE_WORDS = frozenset(["'em", "'til", "'n", "'n'", "ol'", "'cause", "'tis"])
_CLITICS = ("'s", "'ve", "'re", "'ll", "'d", "'m")
# PTB splits these fused forms into two tokens (`gon na`); SST's vocabulary has the halves.
_FUSED = {"cannot": ["can", "not"], "gonna": ["gon", "na"], "wanna": ["wan", "na"],
          "gotta": ["got", "ta"]}
# Tokens that are already complete; never split further.
_ATOMS = frozenset(["...", "--", "``", "''", "`", "'", "-lrb-", "-rrb-", "n't", *_CLITICS,
                    *_APOSTROPHE_WORDS])

_UNICODE = {"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"',
            "\u2026": "...", "\u2014": "--", "\u2013": "--", "\u00a0": " "}
_BRACKETS = {"(": " -lrb- ", ")": " -rrb- ", "[": " -lrb- ", "]": " -rrb- ",
             "{": " -lrb- ", "}": " -rrb- "}
# One pass for both maps: neither produces a character the other maps.
_CHARACTER_MAP = str.maketrans({**_UNICODE, **_BRACKETS})
_OPEN_DOUBLE_QUOTE_RE = re.compile(r'(?:^|(?<=\s))"')
_ELLIPSIS_RE = re.compile(r"\.{3,}")
_DASHES_RE = re.compile(r"-{2,}")
# `,` and `:` stay inside numbers (`1,000`, `10:30`); elsewhere they are tokens.
# A run of `!`/`?` stays one token, as SST writes `?!?`.
# The leading lookahead lets the regex engine skip to candidate characters (4x faster sub).
_PUNCT_RE = re.compile(r"(?=[,:;%$!?])(?:[,:](?!\d)|(?<!\d)[,:]|[;%$]|[!?]+)")
_BACKTICKS_RE = re.compile(r"`+")
_SINGLE_LETTER_RE = re.compile(r"[b-hj-z]")  # `r.`, `j.`; not `a.`/`i.`, which end sentences
_DOTTED_RE = re.compile(r"[a-z]+(?:\.[a-z]+)+")  # `u.s`, `j.r.r`, `p.o.v`
# A clitic or `'n` after an opening apostrophe keeps it (`'s`, `'n'`): not a quote mark.
_APOSTROPHE_STARTS = (*_CLITICS, "'n")
# Longer than any atom, apostrophe word or abbreviation: a chunk longer than this is none of them.
_LONGEST_WORD = max(len(word) for word in (*_ATOMS, *_APOSTROPHE_WORDS, *_ABBREVIATIONS))


def tokenize(text: str) -> list[str]:
    """Split raw text into lower-cased SST/PTB tokens.

    >>> tokenize("I don't like (most) well-made films...")
    ['i', 'do', "n't", 'like', '-lrb-', 'most', '-rrb-', 'well-made', 'films', '...']
    """
    # Tokenizing sits on every request's path (the event loop's): each rewrite below runs only
    # when its trigger character is present, and plain words skip _split_chunk.
    text = text.lower().translate(_CHARACTER_MAP)
    if "\\" in text:
        text = text.replace("\\/", "/").replace("\\*", "*")  # accept PTB-escaped input
    if '"' in text:
        # A double quote opens after whitespace or a bracket and closes otherwise (PTB `` and '').
        text = _OPEN_DOUBLE_QUOTE_RE.sub(" `` ", text).replace('"', " '' ")
    if "..." in text:
        text = _ELLIPSIS_RE.sub(" ... ", text)
    if "--" in text:
        text = _DASHES_RE.sub(" -- ", text)
    text = _PUNCT_RE.sub(_spaced, text)
    chunks = text.split()
    tokens: list[str] = []
    last = len(chunks) - 1
    for index, chunk in enumerate(chunks):
        if chunk.isalnum() and chunk not in _FUSED:
            tokens.append(chunk)
        else:
            tokens.extend(_split_chunk(chunk, chunks[index + 1] if index < last else ""))
    return tokens


def _spaced(match: re.Match[str]) -> str:
    return f" {match.group()} "


def normalize_sst_tokens(line: str) -> list[str]:
    """Tokens of one SST-2 sentence as written in the TSV, in the spelling tokenize() uses.

    train.tsv writes brackets as `(`/`)` and slashes as `/`; dev.tsv writes `-lrb-`/`-rrb-`
    and `\\/`. Both are mapped to `-lrb-`/`-rrb-` and `/`.
    """
    tokens = []
    for token in line.split():
        if token == "(":
            token = "-lrb-"
        elif token == ")":
            token = "-rrb-"
        else:
            token = token.replace("\\/", "/").replace("\\*", "*")
        tokens.append(token)
    return tokens


def _split_chunk(chunk: str, following: str) -> list[str]:
    """Split one whitespace-free chunk into tokens: leading quotes, the word, clitics, trailing marks.

    The marks are peeled by moving two indices, never by slicing the chunk: a slice per mark
    made a chunk of n quote and dot characters cost n² (`x'.'.'.…` on every request's path).
    """
    if chunk in _ATOMS or (chunk.isalnum() and chunk not in _FUSED):
        return [chunk]
    start, end = 0, len(chunk)  # what is left of the word: chunk[start:end]
    prefix: list[str] = []
    # Leading quote marks: a backtick run is a quote; an apostrophe is an opening single
    # quote (SST's "`") unless it starts a clitic, a year ('70s) or a known word ('em).
    while start < end and not _is_one_of(_ATOMS, chunk, start, end):
        match = _BACKTICKS_RE.match(chunk, start, end)
        if match:
            prefix.append("``" if match.end() - start >= 2 else "`")
            start = match.end()
        elif (chunk.startswith("'", start, end) and end - start > 1 and not chunk[start + 1].isdigit()
              and not chunk.startswith(_APOSTROPHE_STARTS, start, end)):
            prefix.append("`")
            start += 1
        else:
            break
    # Trailing marks, peeled from the end: closing quotes, ellipsis, a sentence period.
    suffix_reversed: list[str] = []
    while start < end:
        short = end - start <= _LONGEST_WORD  # only a short rest can be an atom or a known word
        if short and chunk[start:end] in _ATOMS:
            break
        last = chunk[end - 1]
        before = chunk[end - 2] if end - start > 1 else ""
        if last == "'" and before == "'":
            mark = "''"
        elif last == "'" and before != "n" and not (short and chunk[start:end] in _APOSTROPHE_WORDS):
            mark = "'"
        elif last == "`":
            mark = "`"
        elif last == "." and before:
            # Every abbreviation ends in a letter (`mr`, `u.s`, `no`), so a period after another
            # mark (the long adversarial runs) needs no look at the stem; and a period after a
            # letter is the last mark peeled, so the stem is looked at once per chunk at most.
            if "a" <= before <= "z" and _is_abbreviation(chunk, start, end - 1, following):
                break
            mark = "."
        else:
            break
        suffix_reversed.append(mark)
        end -= len(mark)
    suffix_reversed.reverse()
    return prefix + _split_word(chunk[start:end]) + suffix_reversed if start < end else prefix + suffix_reversed


def _is_one_of(words: frozenset[str], chunk: str, start: int, end: int) -> bool:
    """Whether chunk[start:end] is one of words, without slicing a long chunk to find out."""
    return end - start <= _LONGEST_WORD and chunk[start:end] in words


def _split_word(word: str) -> list[str]:
    """Split contractions the PTB way: `don't` -> `do n't`, `it's` -> `it 's`, `cannot` -> `can not`."""
    if word in _ATOMS:
        return [word]
    if word in _FUSED:
        return list(_FUSED[word])
    if len(word) > 3 and word.endswith("n't"):
        return [word[:-3], "n't"]  # `can't` -> `ca n't`, `won't` -> `wo n't`, as SST writes them
    for clitic in _CLITICS:
        if len(word) > len(clitic) and word.endswith(clitic) and word[-len(clitic) - 1] != "'":
            return [word[: -len(clitic)], clitic]
    return [word]


def _is_abbreviation(chunk: str, start: int, stem_end: int, following: str) -> bool:
    """Whether the period after chunk[start:stem_end] belongs to the word (`mr.`, `u.s.`, `no. 1`)."""
    length = stem_end - start
    if _is_one_of(_ABBREVIATIONS, chunk, start, stem_end):
        return True
    if length == 1 and _SINGLE_LETTER_RE.fullmatch(chunk, start, stem_end):
        return True
    if _DOTTED_RE.fullmatch(chunk, start, stem_end):
        return True
    return length == 2 and chunk.startswith("no", start) and following[:1].isdigit()
