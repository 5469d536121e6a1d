import pytest

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
