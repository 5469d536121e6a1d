import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnn_sentiment.model import tokenizer
from rnn_sentiment.model.data import read_sst_tsv
from rnn_sentiment.model.tokenizer import normalize_sst_tokens, tokenize


@pytest.mark.parametrize("text, expected", [
    ("I don't like it", ["i", "do", "n't", "like", "it"]),
    ("can't won't ain't", ["ca", "n't", "wo", "n't", "ai", "n't"]),
    ("it's you've we're I'll he'd I'm", ["it", "'s", "you", "'ve", "we", "'re", "i", "'ll", "he", "'d", "i", "'m"]),
    ("Great, fun; smart: yes! really? ok.", ["great", ",", "fun", ";", "smart", ":", "yes", "!", "really", "?", "ok", "."]),
    ("so (very) good", ["so", "-lrb-", "very", "-rrb-", "good"]),
    ("a well-made, thought-provoking film", ["a", "well-made", ",", "thought-provoking", "film"]),
    ("wait... what", ["wait", "...", "what"]),
    ('he said "boring" twice', ["he", "said", "``", "boring", "''", "twice"]),
    ("good -- not great", ["good", "--", "not", "great"]),
    ("Mr. Smith vs. the U.S. army.", ["mr.", "smith", "vs.", "the", "u.s.", "army", "."]),
    ("1,000 times at 10:30, $5 or 50%", ["1,000", "times", "at", "10:30", ",", "$", "5", "or", "50", "%"]),
    ("the '70s and rock 'n' roll", ["the", "'70s", "and", "rock", "'n'", "roll"]),
    ("it\u2019s \u201cfine\u201d\u2026", ["it", "'s", "``", "fine", "''", "..."]),
    ("   ", []),
])
def test_tokenize_cases(text, expected):
    assert tokenize(text) == expected


def test_normalize_sst_tokens_maps_both_bracket_styles():
    assert normalize_sst_tokens("a ( b ) c") == ["a", "-lrb-", "b", "-rrb-", "c"]
    assert normalize_sst_tokens("a -lrb- b -rrb- c") == ["a", "-lrb-", "b", "-rrb-", "c"]
    assert normalize_sst_tokens("writer\\/director") == ["writer/director"]


def test_tokenized_dev_sentences_pass_through(sst2_dir):
    examples = read_sst_tsv(sst2_dir / "dev.tsv")
    same = sum(tokenize(" ".join(e.tokens)) == list(e.tokens) for e in examples)
    assert same / len(examples) >= 0.97


# --- linear in the text's length, whatever the text -------------------------------------------

def _tokenizer_work(text: str) -> int:
    """Work tokenize() does, counted rather than timed: each line it runs, plus the characters of
    every distinct string that appears in one of its local variables. A slice is a new string (a
    copy), so peeling a chunk one character per slice counts n + (n - 1) + … here, as it costs."""
    work = 0
    seen: dict[int, str] = {}  # holding each string keeps its id from being reused

    def enter(frame, event, arg):
        return step if frame.f_code.co_filename == tokenizer.__file__ else None

    def step(frame, event, arg):
        nonlocal work
        work += 1
        for value in frame.f_locals.values():
            if isinstance(value, str) and seen.get(id(value)) is not value:
                work += len(value)
                seen[id(value)] = value
        return step

    sys.settrace(enter)
    try:
        tokenize(text)
    finally:
        sys.settrace(None)
    return work


ADVERSARIAL = {
    "quote-dot runs": lambda n: '"x' + "'." * (n // 2),
    "dot-quote runs": lambda n: "x" + ".'" * (n // 2),
    "closing quotes": lambda n: "x" + "'" * n,
    "opening quotes": lambda n: "'" * n + "x",
    "backtick runs": lambda n: "`'" * (n // 2) + "x",
    "dotted letters then marks": lambda n: "a." * (n // 4) + "'." * (n // 4),
    "ordinary text": lambda n: ("so good but bad " * n)[:n],
}


@pytest.mark.parametrize("make", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_tokenizing_costs_work_linear_in_the_length(make):
    small, large = _tokenizer_work(make(1_000)), _tokenizer_work(make(4_000))
    # Four times the text, four times the work (a little less: fixed costs); quadratic gives 16.
    assert large <= 5 * small, f"work grew {large / small:.1f}x for 4x the text"


@pytest.mark.parametrize("text, expected", [
    ('"x' + "'." * 3, ["``", "x", "'", ".", "'", ".", "'", "."]),
    ("x" + "'" * 5, ["x", "'", "''", "''"]),
    ("'" * 3 + "x", ["`", "`", "`", "x"]),
    ("`'`'x", ["`", "`", "`", "`", "x"]),
    ("u.s.'.", ["u.s.", "'", "."]),
    ("no.'. 1", ["no.", "'", ".", "1"]),
    ("rock 'n'.", ["rock", "'n'", "."]),
    ("ol'.'", ["ol'", ".", "'"]),
    ("mr..", ["mr.", "."]),
    ("'70s.'", ["'70s", ".", "'"]),
])
def test_runs_of_quotes_and_dots_split_into_marks(text, expected):
    assert tokenize(text) == expected


# --- properties that hold for any text ---------------------------------------------------------

ANY_TEXT = st.text(max_size=300)
# Text made of the characters the rules act on, so that the rules (not plain words) are exercised.
RULE_TEXT = st.text(alphabet=st.sampled_from(list("abnost'`\".,:;!?-()$%019 \u2019\u201c\u2026")), max_size=80)


@given(st.one_of(ANY_TEXT, RULE_TEXT))
@settings(max_examples=400, deadline=None)
def test_any_text_gives_non_empty_tokens_without_whitespace(text):
    tokens = tokenize(text)
    assert isinstance(tokens, list) and all(isinstance(token, str) and token for token in tokens)
    assert not any(character.isspace() for token in tokens for character in token)
    assert tokenize(text) == tokens  # deterministic


@given(st.one_of(ANY_TEXT, RULE_TEXT))
@settings(max_examples=400, deadline=None)
def test_only_where_whitespace_is_matters_not_which_or_how_much(text):
    assert tokenize(" ".join(text.split())) == tokenize(text)


@given(st.one_of(ANY_TEXT, RULE_TEXT))
@settings(max_examples=200, deadline=None)
def test_case_and_surrounding_space_never_change_the_tokens(text):
    tokens = tokenize(text)
    assert tokenize(text.lower()) == tokens
    assert tokenize(f"  {text}\t\n") == tokens
