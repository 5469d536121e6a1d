"""SentimentRNN: embedding -> recurrent cell (RNN/GRU/LSTM) -> pooling -> linear, one forward path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from . import pooling
from .cells import cell_kind
from .config import ModelConfig
from .vocabulary import PAD_ID, UNK_ID

__all__ = ["RecurrentState", "EncodedSequence", "RNNOutput", "AdditiveAttention", "SentimentRNN"]

# h [L*D, B, H] for RNN/GRU; (h, c) for LSTM.
RecurrentState = Union[Tensor, tuple[Tensor, Tensor]]


@dataclass
class EncodedSequence:
    """What the recurrence produced for a batch of sequences."""

    outputs: Tensor  # [B, T, H*D] top-layer output per step, zeros at padding
    final_state: RecurrentState  # state after each row's last real token


@dataclass
class RNNOutput:
    """The single forward's result; step tensors only when asked for (trace)."""

    logits: Tensor  # [B, C] already divided by config.temperature
    final_state: RecurrentState  # carry it into the next chunk of a stream
    step_hidden: Tensor | None = None  # [B, T, H*D] when return_steps, zeros at padding
    attention: Tensor | None = None  # [B, T] weights when pooling == "attention" and return_steps


class AdditiveAttention(nn.Module):
    """Score each step with v^T tanh(W h_t) (Bahdanau et al. 2015, arXiv:1409.0473)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.project = nn.Linear(size, size)
        self.score = nn.Linear(size, 1, bias=False)

    def forward(self, outputs: Tensor) -> Tensor:
        """Each step's raw score [B, T] for outputs [B, T, H*D]; the softmax over them is the
        "attention" pooling's (model/pooling.py), which also runs it chunk by chunk."""
        return self.score(torch.tanh(self.project(outputs))).squeeze(-1)  # [B, T]


class SentimentRNN(nn.Module):
    """A recurrent sentiment classifier whose recurrence is a state you can carry."""

    def __init__(self, config: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.embedding = nn.Embedding(vocab_size, config.embedding_dim, padding_idx=PAD_ID)
        # PyTorch's N(0, 1) word vectors dwarf the cell's U(-1/sqrt(H), 1/sqrt(H)) weights and
        # saturate the gates at the start; N(0, 0.1) trained faster and scored about 1.5 points
        # higher on SST-2 dev (two seeds, GRU).
        nn.init.normal_(self.embedding.weight, mean=0.0, std=0.1)
        with torch.no_grad():
            self.embedding.weight[PAD_ID].zero_()
        # Hashed character n-grams (model/subwords.py): a token's input is its word vector plus
        # the mean of its n-gram vectors; row `subword_buckets` pads and is left out of the mean.
        self.subword_embedding: nn.EmbeddingBag | None = None
        if config.subword_buckets:
            self.subword_embedding = nn.EmbeddingBag(config.subword_buckets + 1, config.embedding_dim,
                                                     mode="mean", padding_idx=config.subword_buckets)
            nn.init.normal_(self.subword_embedding.weight, mean=0.0, std=0.1)
            with torch.no_grad():
                self.subword_embedding.weight[config.subword_buckets].zero_()
        # The n-gram ids of each vocabulary word [V, K] while training (set_known_subwords). A
        # trained network folds their mean into the word vectors (fold_known_subwords), so that
        # only words outside the vocabulary need n-grams at request time; not saved.
        self.register_buffer("known_subwords", torch.empty(vocab_size, 0, dtype=torch.int64), persistent=False)
        # Dropout between stacked layers only; PyTorch warns when asked for it with one layer.
        common = dict(
            input_size=config.embedding_dim,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            batch_first=True,
            bidirectional=config.bidirectional,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        # The cell's torch module (model/cells.py holds its gate layout and step equations).
        self.rnn: nn.RNNBase = cell_kind(config.cell).module(**common)
        features = config.hidden_size * config.num_directions
        self.attention = AdditiveAttention(features) if config.pooling == "attention" else None
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(features, len(config.labels))

    @property
    def output_size(self) -> int:
        return self.config.hidden_size * self.config.num_directions

    def embed(self, token_ids: Tensor, subword_ids: Tensor | None = None) -> Tensor:
        """Each token's input vector [..., E] for token_ids [...]: its word vector, plus with
        sub-words the mean of its n-gram vectors.

        subword_ids [..., K]: n-gram ids of the tokens encoded as <unk> (Vocabulary.unknown_subwords),
        padded with config.subword_buckets; None when no token needs any. Known words take theirs
        from known_subwords while training and from their folded word vector after.
        """
        vectors = self.embedding(token_ids)  # [..., E]
        if self.subword_embedding is None:
            if subword_ids is not None:
                raise ValueError("this network has no sub-word table (subword_buckets is 0); pass subword_ids=None")
            return vectors
        if self.has_unfolded_subwords:
            vectors = vectors + self._subword_mean(self._known_subwords_of(token_ids))
        if subword_ids is not None:
            if subword_ids.shape[:-1] != token_ids.shape:
                raise ValueError(f"subword_ids {tuple(subword_ids.shape)} must be token_ids "
                                 f"{tuple(token_ids.shape)} plus one n-gram axis")
            vectors = vectors + self._subword_mean(subword_ids)
        return vectors

    def set_known_subwords(self, table: Tensor) -> None:
        """Train with every vocabulary word's n-grams: table [V, K] (Vocabulary.known_subword_table)."""
        if self.subword_embedding is None:
            raise ValueError("this network has no sub-word table (subword_buckets is 0)")
        if table.dim() != 2 or table.shape[0] != self.embedding.num_embeddings:
            raise ValueError(f"expected a [{self.embedding.num_embeddings}, K] n-gram table, got {tuple(table.shape)}")
        device = self.embedding.weight.device
        self.known_subwords = table.to(device, torch.int64)

    def fold_known_subwords(self) -> None:
        """Add each vocabulary word's mean n-gram vector to its word vector, once, and forget the
        table: the same function, computed once per word instead of once per token. Checkpoints
        hold folded networks."""
        if self.has_unfolded_subwords:
            with torch.no_grad():
                self.embedding.weight += self._subword_mean(self.known_subwords)  # [V, E] padding row: +0
        self.known_subwords = self.known_subwords[:, :0]

    @property
    def has_unfolded_subwords(self) -> bool:
        return bool(self.known_subwords.shape[-1])

    def drop_words(self, token_ids: Tensor, subword_ids: Tensor | None,
                   dropped: Tensor) -> tuple[Tensor, Tensor | None]:
        """Word dropout: the tokens where dropped [B, T] is True become <unk> but keep their n-grams,
        as an unseen word does at request time. Already-unknown tokens must not be dropped."""
        token_ids_out = token_ids.masked_fill(dropped, UNK_ID)  # [B, T]
        if not self.has_unfolded_subwords or not bool(dropped.any()):
            return token_ids_out, subword_ids
        moved = self._known_subwords_of(token_ids)  # [B, T, K1]
        pad = self.config.subword_buckets
        if subword_ids is None:
            subword_ids = torch.full_like(moved, pad)
        width = max(moved.shape[-1], subword_ids.shape[-1])
        moved = nn.functional.pad(moved, (0, width - moved.shape[-1]), value=pad)
        subword_ids = nn.functional.pad(subword_ids, (0, width - subword_ids.shape[-1]), value=pad)
        return token_ids_out, torch.where(dropped.unsqueeze(-1), moved, subword_ids)  # [B, T, K]

    def _known_subwords_of(self, token_ids: Tensor) -> Tensor:
        """known_subwords rows for token_ids [...] -> [..., K], cut to the longest row they need: rows
        are padded at the end, and a batch of short words need not carry the longest word's width."""
        rows = self.known_subwords[token_ids]  # [..., K]
        width = int((rows != self.config.subword_buckets).sum(-1).max()) if rows.numel() else 0
        return rows[..., :max(1, width)]

    def _subword_mean(self, subword_ids: Tensor) -> Tensor:
        """Mean n-gram vector per position [..., E] of subword_ids [..., K >= 1]; zeros where all pad."""
        assert self.subword_embedding is not None
        means = self.subword_embedding(subword_ids.reshape(-1, subword_ids.shape[-1]))  # [N, E]
        return means.view(*subword_ids.shape[:-1], -1)

    def encode(self, token_ids: Tensor, lengths: Tensor,
               initial_state: RecurrentState | None = None,
               subword_ids: Tensor | None = None) -> EncodedSequence:
        """Run the recurrence over a padded batch, starting from initial_state (zeros if None).

        Packing means padding is never read: each row stops at its own length, and the
        final state is the state after that row's last real token. Every length must be >= 1.
        """
        return self.encode_embedded(self.embed(token_ids, subword_ids), lengths, initial_state)

    def encode_embedded(self, embedded: Tensor, lengths: Tensor,
                        initial_state: RecurrentState | None = None) -> EncodedSequence:
        """encode() from word vectors [B, T, E] instead of ids: what attributions differentiate.

        encode(ids, subword_ids=s) is exactly encode_embedded(embed(ids, s)).
        """
        batch, steps = embedded.shape[:2]  # [B, T, E]
        lengths = lengths.to("cpu", torch.int64)  # pack_padded_sequence wants CPU lengths
        if lengths.numel() != batch or bool((lengths < 1).any()) or bool((lengths > steps).any()):
            raise ValueError(f"lengths must be {batch} values in [1, {steps}], got {lengths.tolist()}")
        embedded = self.dropout(embedded)  # [B, T, E]
        packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        packed_out, final_state = self.rnn(packed, initial_state)
        outputs, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=steps)  # [B, T, H*D]
        return EncodedSequence(outputs=outputs, final_state=final_state)

    def forward(self, token_ids: Tensor, lengths: Tensor,
                initial_state: RecurrentState | None = None,
                return_steps: bool = False, subword_ids: Tensor | None = None) -> RNNOutput:
        encoded = self.encode(token_ids, lengths, initial_state, subword_ids)
        return self._classify(encoded, lengths, return_steps)

    def forward_embedded(self, embedded: Tensor, lengths: Tensor,
                         initial_state: RecurrentState | None = None,
                         return_steps: bool = False) -> RNNOutput:
        """forward() from word vectors [B, T, E]; forward(ids, subword_ids=s) equals forward_embedded(embed(ids, s))."""
        encoded = self.encode_embedded(embedded, lengths, initial_state)
        return self._classify(encoded, lengths, return_steps)

    def _classify(self, encoded: EncodedSequence, lengths: Tensor, return_steps: bool) -> RNNOutput:
        pooled, attention = self._pool(encoded, lengths)  # [B, H*D], [B, T] | None
        logits = self.classifier(self.dropout(pooled)) / self.config.temperature  # [B, C]
        return RNNOutput(
            logits=logits,
            final_state=encoded.final_state,
            step_hidden=encoded.outputs if return_steps else None,
            attention=attention if return_steps else None,
        )

    def classify_encoded(self, encoded: EncodedSequence, lengths: Tensor) -> Tensor:
        """forward()'s pooling and classifier alone on an encoded batch: logits [B, C]. Lets a caller
        differentiate the answer with respect to the recurrence's outputs without re-running it."""
        return self._classify(encoded, lengths, return_steps=False).logits

    def classify_pooled(self, pooled: Tensor) -> Tensor:
        """Logits for an already pooled representation [B, H*D] (e.g. a zero 'no evidence' state)."""
        return self.classifier(pooled) / self.config.temperature  # [B, C]

    def classify_pooled_array(self, pooled: np.ndarray) -> np.ndarray:
        """classify_pooled on a CPU float32 array [B, H*D] -> logits [B, C]: the same Linear and
        temperature without torch's fixed cost per op, which outweighs a stream update's few rows."""
        weight = self.classifier.weight.detach().float().cpu().numpy()  # [C, H*D], a view on CPU
        bias = self.classifier.bias.detach().float().cpu().numpy()
        return (pooled @ weight.T + bias) / np.float32(self.config.temperature)

    def forward_prefixes(self, token_ids: Tensor, subword_ids: Tensor | None = None) -> RNNOutput:
        """The answer for every prefix of ONE text token_ids [T] (subword_ids [T, K] or None, as for
        embed): row t of the logits [T, C] is what
        forward() gives for the first t+1 tokens, and step_hidden [1, T, H*D] holds the full text's
        states (attention [1, T]: the full text's weights, pooling "attention").

        Unidirectional, one pass suffices: the state after token t is the end state of prefix t,
        and each pooling has a running form (model/pooling.py). A backward direction depends on the suffix, so bidirectional networks
        run all T prefixes as one padded batch.
        """
        steps = token_ids.shape[0]
        if self.config.bidirectional:
            keep = torch.ones(steps, steps, dtype=torch.bool, device=token_ids.device).tril()  # [T, T]
            prefixes = torch.where(keep, token_ids.unsqueeze(0).expand(steps, steps), PAD_ID)  # [T, T]
            # Padding is never read (packing), so every prefix row may carry the whole text's n-grams.
            prefix_subwords = subword_ids.unsqueeze(0).expand(steps, -1, -1) if subword_ids is not None else None
            output = self(prefixes, torch.arange(1, steps + 1), return_steps=True, subword_ids=prefix_subwords)
            assert output.step_hidden is not None
            attention = output.attention[-1:] if output.attention is not None else None  # [1, T]
            return RNNOutput(logits=output.logits, final_state=output.final_state,
                             step_hidden=output.step_hidden[-1:], attention=attention)
        encoded = self.encode(token_ids.unsqueeze(0), torch.tensor([steps]),
                              subword_ids=subword_ids.unsqueeze(0) if subword_ids is not None else None)
        logits, attention = self.prefix_logits(encoded.outputs[0])
        return RNNOutput(logits=logits, final_state=encoded.final_state, step_hidden=encoded.outputs,
                         attention=attention)

    def prefix_logits(self, outputs: Tensor) -> tuple[Tensor, Tensor | None]:
        """Unidirectional only: the logits of every prefix [T, C] from ONE text's top-layer states
        outputs [T, H], and the full text's attention weights [1, T] (pooling "attention", else None).

        forward_prefixes' one-pass half, apart so that states computed by another runtime
        (ONNX Runtime, for a trace) get exactly the same pooling and classifier.
        """
        if self.config.bidirectional:
            raise ValueError("prefix_logits needs a unidirectional network: a backward state depends on the suffix")
        pooled, attention = pooling.pool_prefixes(self.config.pooling, outputs, self.attention)  # [T, H], [1, T] | None
        return self.classifier(self.dropout(pooled)) / self.config.temperature, attention  # [T, C]

    def _pool(self, encoded: EncodedSequence, lengths: Tensor) -> tuple[Tensor, Tensor | None]:
        ends = None
        if self.config.pooling == "last":
            # The top layer's final state per direction: for the forward direction the state
            # after the last real token, for the backward one the state after reading back to
            # the first. Unidirectional, this equals outputs[b, length-1].
            state = encoded.final_state[0] if isinstance(encoded.final_state, tuple) else encoded.final_state
            ends = torch.cat(list(state[-self.config.num_directions:]), dim=-1)  # [D, B, H] -> [B, H*D]
        return pooling.pool(self.config.pooling, encoded.outputs, lengths, self.attention, ends)  # [B, H*D], [B, T] | None
