"""SentimentRNN: embedding -> recurrent cell (RNN/GRU/LSTM) -> pooling -> linear, one forward path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .config import ModelConfig
from .vocabulary import PAD_ID

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
    """Score each step with v^T tanh(W h_t) (Bahdanau et al. 2015, arXiv:1409.0473), masked softmax."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.project = nn.Linear(size, size)
        self.score = nn.Linear(size, 1, bias=False)

    def forward(self, outputs: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        scores = self.score(torch.tanh(self.project(outputs))).squeeze(-1)  # [B, T]
        scores = scores.masked_fill(~mask, float("-inf"))  # [B, T] padding never gets weight
        weights = torch.softmax(scores, dim=-1)  # [B, T]
        pooled = torch.bmm(weights.unsqueeze(1), outputs).squeeze(1)  # [B, H*D]
        return pooled, weights


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
        # Dropout between stacked layers only; PyTorch warns when asked for it with one layer.
        common = dict(
            input_size=config.embedding_dim,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            batch_first=True,
            bidirectional=config.bidirectional,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        if config.cell == "rnn":
            self.rnn: nn.RNNBase = nn.RNN(nonlinearity="tanh", **common)
        elif config.cell == "gru":
            self.rnn = nn.GRU(**common)
        else:
            self.rnn = nn.LSTM(**common)
        features = config.hidden_size * config.num_directions
        self.attention = AdditiveAttention(features) if config.pooling == "attention" else None
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(features, len(config.labels))

    @property
    def output_size(self) -> int:
        return self.config.hidden_size * self.config.num_directions

    def encode(self, token_ids: Tensor, lengths: Tensor,
               initial_state: RecurrentState | None = None) -> EncodedSequence:
        """Run the recurrence over a padded batch, starting from initial_state (zeros if None).

        Packing means padding is never read: each row stops at its own length, and the
        final state is the state after that row's last real token. Every length must be >= 1.
        """
        return self.encode_embedded(self.embedding(token_ids), lengths, initial_state)

    def encode_embedded(self, embedded: Tensor, lengths: Tensor,
                        initial_state: RecurrentState | None = None) -> EncodedSequence:
        """encode() from word vectors [B, T, E] instead of ids: what attributions differentiate.

        encode(ids) is exactly encode_embedded(embedding(ids)).
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
                return_steps: bool = False) -> RNNOutput:
        encoded = self.encode(token_ids, lengths, initial_state)
        return self._classify(encoded, lengths, return_steps)

    def forward_embedded(self, embedded: Tensor, lengths: Tensor,
                         initial_state: RecurrentState | None = None,
                         return_steps: bool = False) -> RNNOutput:
        """forward() from word vectors [B, T, E]; forward(ids) equals forward_embedded(embedding(ids))."""
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

    def forward_prefixes(self, token_ids: Tensor) -> RNNOutput:
        """The answer for every prefix of ONE text token_ids [T]: row t of the logits [T, C] is what
        forward() gives for the first t+1 tokens, and step_hidden [1, T, H*D] holds the full text's
        states (attention [1, T]: the full text's weights, pooling "attention").

        Unidirectional, one pass suffices: the state after token t is the end state of prefix t,
        and each pooling has a running form (cumulative mean, cumulative max, attention masked
        to the prefix). A backward direction depends on the suffix, so bidirectional networks
        run all T prefixes as one padded batch.
        """
        steps = token_ids.shape[0]
        if self.config.bidirectional:
            keep = torch.ones(steps, steps, dtype=torch.bool, device=token_ids.device).tril()  # [T, T]
            prefixes = torch.where(keep, token_ids.unsqueeze(0).expand(steps, steps), PAD_ID)  # [T, T]
            output = self(prefixes, torch.arange(1, steps + 1), return_steps=True)
            assert output.step_hidden is not None
            attention = output.attention[-1:] if output.attention is not None else None  # [1, T]
            return RNNOutput(logits=output.logits, final_state=output.final_state,
                             step_hidden=output.step_hidden[-1:], attention=attention)
        encoded = self.encode(token_ids.unsqueeze(0), torch.tensor([steps]))
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
        steps = outputs.shape[0]
        attention = None
        pooling = self.config.pooling
        if pooling == "last":
            pooled = outputs  # [T, H] the end state of each prefix (top layer)
        elif pooling == "mean":
            counts = torch.arange(1, steps + 1, device=outputs.device, dtype=outputs.dtype).unsqueeze(-1)  # [T, 1]
            pooled = outputs.cumsum(dim=0) / counts  # [T, H]
        elif pooling == "max":
            pooled = outputs.cummax(dim=0).values  # [T, H]
        else:
            assert self.attention is not None
            mask = torch.ones(steps, steps, dtype=torch.bool, device=outputs.device).tril()  # [T, T] prefix t
            pooled, weights = self.attention(outputs.unsqueeze(0).expand(steps, -1, -1), mask)  # [T, H], [T, T]
            attention = weights[-1:]  # [1, T]
        return self.classifier(self.dropout(pooled)) / self.config.temperature, attention  # [T, C]

    def _pool(self, encoded: EncodedSequence, lengths: Tensor) -> tuple[Tensor, Tensor | None]:
        outputs = encoded.outputs  # [B, T, H*D]
        pooling = self.config.pooling
        if pooling == "last":
            # The top layer's final state per direction: for the forward direction the state
            # after the last real token, for the backward one the state after reading back to
            # the first. Unidirectional, this equals outputs[b, length-1].
            state = encoded.final_state[0] if isinstance(encoded.final_state, tuple) else encoded.final_state
            top = state[-self.config.num_directions:]  # [D, B, H]
            return torch.cat(list(top), dim=-1), None  # [B, H*D]
        mask = _length_mask(lengths, outputs.shape[1], outputs.device)  # [B, T]
        if pooling == "mean":
            counts = lengths.to(outputs.device, outputs.dtype).unsqueeze(-1)  # [B, 1]
            return outputs.sum(dim=1) / counts, None  # [B, H*D] padding rows are zeros
        if pooling == "max":
            masked = outputs.masked_fill(~mask.unsqueeze(-1), float("-inf"))  # [B, T, H*D]
            return masked.max(dim=1).values, None  # [B, H*D]
        assert self.attention is not None
        return self.attention(outputs, mask)  # [B, H*D], [B, T]


def _length_mask(lengths: Tensor, steps: int, device: torch.device) -> Tensor:
    positions = torch.arange(steps, device=device).unsqueeze(0)  # [1, T]
    return positions < lengths.to(device).unsqueeze(1)  # [B, T] True at real tokens
