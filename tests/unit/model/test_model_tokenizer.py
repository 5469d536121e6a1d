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



def test_ptb_escaped_input_reads_as_the_characters_it_escapes():
    # dev.tsv writes `\/` and `\*`; text pasted from it must meet the vocabulary's `/` and `*`,
    # exactly as the training side (normalize_sst_tokens) spells them.
    text = "the writer\\/director 's \\*great\\* film"
    assert tokenize(text) == ["the", "writer/director", "'s", "*great*", "film"]
    assert tokenize(text) == normalize_sst_tokens(text)


@pytest.mark.parametrize("text, expected", [
    ("good--not great", ["good", "--", "not", "great"]),
    ("wait---what", ["wait", "--", "what"]),  # any run of two or more hyphens is one dash
    ("well-made", ["well-made"]),  # one hyphen joins a word
])
def test_a_dash_written_against_its_words_is_its_own_token(text, expected):
    assert tokenize(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("``great'' film", ["``", "great", "''", "film"]),  # PTB double quotes against the word
    ("`great' film", ["`", "great", "'", "film"]),  # PTB single quotes against the word
    ("````great", ["``", "great"]),  # a longer run of backticks is still one double quote
    ("```", ["``"]),
    ("said '``", ["said", "`", "``"]),  # a single opening quote, then a double one: two marks
])
def test_backtick_quotes_against_a_word_split_off_as_one_quote_mark(text, expected):
    assert tokenize(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("`'em all", ["`", "'em", "all"]),
    ("`'cause", ["`", "'cause"]),
    ("``'til dawn''", ["``", "'til", "dawn", "''"]),
    ("``ol' man river''", ["``", "ol'", "man", "river", "''"]),
])
def test_a_word_spelled_with_an_apostrophe_keeps_it_after_an_opening_quote(text, expected):
    # SST's vocabulary has `'em`, `'til`, `ol'`: a quote mark before them must not eat their apostrophe.
    assert tokenize(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("i rate it 9.", ["i", "rate", "it", "9", "."]),
    ("so good!.", ["so", "good", "!", "."]),
])
def test_a_sentence_period_after_a_digit_or_a_mark_is_its_own_token(text, expected):
    assert tokenize(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("isn't", ["is", "n't"]),
    ("xn't", ["x", "n't"]),  # a one-letter (misspelt, unknown) stem still gives the vocabulary's n't
    ("n't", ["n't"]),
])
def test_nt_splits_off_any_stem(text, expected):
    assert tokenize(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("j. k. rowling and z. smith", ["j.", "k.", "rowling", "and", "z.", "smith"]),  # initials keep their period
    ("'j. edgar' was dull", ["`", "j.", "edgar", "'", "was", "dull"]),  # also inside quotes
    ("rated a.", ["rated", "a", "."]),  # `a.` and `i.` end sentences, they are not initials
    ("so am i.", ["so", "am", "i", "."]),
    ("made in the u.s.a.", ["made", "in", "the", "u.s.a."]),  # dotted abbreviations, whatever their last letter
    ("the no. 1-ranked film", ["the", "no.", "1-ranked", "film"]),  # `no.` before a number is "number"
    ("say no.", ["say", "no", "."]),  # and the word "no" otherwise
])
def test_a_period_stays_on_initials_and_abbreviations_and_ends_sentences_elsewhere(text, expected):
    assert tokenize(text) == expected


def test_a_clitic_is_not_split_out_of_a_doubled_apostrophe():
    # `''` is a closing quote: `dude''s` must not become `dude'` + `'s`, a half quote on each token.
    assert tokenize("dude''s car") == ["dude''s", "car"]

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
