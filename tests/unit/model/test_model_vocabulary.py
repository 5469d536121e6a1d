import pytest

from rnn_sentiment.model.vocabulary import PAD_ID, UNK_ID, Vocabulary


def test_build_orders_by_frequency_and_respects_limits():
    vocab = Vocabulary.build([["b", "a", "b"], ["c", "b", "a"], ["d"]], min_freq=2)
    assert vocab.tokens == ("<pad>", "<unk>", "b", "a")
    assert len(Vocabulary.build([["b", "a", "b"]], max_size=3)) == 3


def test_encode_and_is_known():
    vocab = Vocabulary.build([["good", "film"]])
    assert vocab.encode(["good", "unseen"]) == [vocab.encode(["good"])[0], UNK_ID]
    assert vocab.is_known("film") and not vocab.is_known("unseen")
    assert not vocab.is_known("<pad>") and vocab.encode(["<pad>"]) == [PAD_ID]


def test_json_round_trip():
    vocab = Vocabulary.build([["ça", "va", "ça"]])
    assert Vocabulary.from_json(vocab.to_json()) == vocab


def test_rejects_a_list_without_the_special_tokens():
    with pytest.raises(ValueError):
        Vocabulary(["good", "bad"])
