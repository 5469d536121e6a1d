"""Build an ONNX graph of a SentimentRNN's Predict forward: ids + lengths -> label probabilities.

Written node by node rather than traced, because the tracing exporters drop what matters here:
packed sequences. ONNX's recurrent ops (RNN, GRU, LSTM) take `sequence_lens`, so each row stops
at its own length exactly as pack_padded_sequence makes PyTorch do, and Y_h is the state after
each row's last real token. Every architecture SentimentRNN builds is covered: rnn/gru/lstm,
any layer count, bidirectional, pooling last/mean/max/attention.

The weights are the module's own, re-stacked into the gate order of the cell's ONNX operator,
both orders named in model/cells.py (e.g. GRU r,z,n -> z,r,h with linear_before_reset=1). The
graph is built in memory from the loaded module: no second artifact to ship or to drift from
the checkpoint. Every layer's step states are outputs too (layer_states_output):
a trace of a unidirectional network fetches its recurrence from them. A unidirectional network's
graph also takes every layer's state before the text and gives it after (initial_h_input,
final_h_output): a stream's step, so one session per model serves Predict, Trace and streams.

The embedding tables go in as they are (no re-stacking), and each names its parameter in the
initializer's doc_string (PARAMETER_TAG): a server's session reads torch's own table in place
(backends.borrowed_parameters) instead of holding a copy of the largest tensors of the model.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from .cells import CellKind, cell_kind
from .network import SentimentRNN
from .pooling import POOLINGS_BY_NAME, OnnxPoolingInputs

__all__ = ["INPUT_IDS", "INPUT_LENGTHS", "INPUT_SUBWORDS", "OUTPUT_PROBABILITIES", "OPSET", "build_onnx_model",
           "carries_state", "layer_states_output", "initial_h_input", "initial_c_input", "final_h_output",
           "final_c_output", "PARAMETER_TAG"]

INPUT_IDS = "token_ids"  # [B, T] int64, padded with PAD_ID
INPUT_LENGTHS = "lengths"  # [B] int32, each in [1, T]
# [B, T, K] int64 n-gram ids of the unknown tokens, padded with subword_buckets (K >= 1); an
# input only of networks with sub-words (SentimentRNN.embed).
INPUT_SUBWORDS = "subword_ids"
OUTPUT_PROBABILITIES = "probabilities"  # [B, C] float32, softmax of logits / temperature
OPSET = 17
# doc_string prefix of an initializer that is a parameter exactly as torch holds it; the
# parameter's name (as in named_parameters) follows.
PARAMETER_TAG = "parameter:"


def layer_states_output(layer: int) -> str:
    """The name of layer `layer`'s step states output [T, D, B, H] (ONNX's Y: zeros past a row's length).

    Every layer's Y is a graph output so that a trace can fetch the recurrence from the same
    kernels Predict runs. Predict, which fetches only the probabilities, does not pay for it:
    the kernel writes Y anyway for the layer above or the pooling (the same time with or without
    these outputs: docs/performance.md).
    """
    return f"states_l{layer}"


def initial_h_input(layer: int) -> str:
    """build_onnx_model's input (unidirectional networks): layer `layer`'s state before the chunk [1, B, H]."""
    return f"initial_h_l{layer}"


def initial_c_input(layer: int) -> str:
    """build_onnx_model's input (unidirectional networks): layer `layer`'s LSTM cell state before the chunk [1, B, H]."""
    return f"initial_c_l{layer}"


def final_h_output(layer: int) -> str:
    """build_onnx_model's output (unidirectional networks): layer `layer`'s state after each row's last token [1, B, H]."""
    return f"final_h_l{layer}"


def final_c_output(layer: int) -> str:
    """build_onnx_model's output (unidirectional networks): layer `layer`'s LSTM cell state after each row's last token [1, B, H]."""
    return f"final_c_l{layer}"


class _Graph:
    """Accumulates nodes and initializers with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def constant(self, hint: str, value: np.ndarray) -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def parameter(self, hint: str, network: SentimentRNN, parameter_name: str) -> str:
        """A parameter as torch holds it, tagged with its name (PARAMETER_TAG)."""
        name = self.constant(hint, _array(network.get_parameter(parameter_name)))
        self.initializers[-1].doc_string = PARAMETER_TAG + parameter_name
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, outputs: int = 1,
           names: list[str] | None = None, **attrs) -> list[str]:
        """One node; `names` fixes its output names (graph outputs), else they are made unique."""
        names = names or [self.name(hint or op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, **attrs))
        return names

    def one(self, op_type: str, inputs: list[str], hint: str | None = None, **attrs) -> str:
        return self.op(op_type, inputs, hint, 1, **attrs)[0]


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu", torch.float32).numpy()


def _reordered(weight: torch.Tensor, kind: CellKind) -> np.ndarray:
    """A stacked weight or bias in the gate order of the cell's ONNX operator (model/cells.py)."""
    return _array(kind.onnx_stacked(weight.detach()))


def _recurrent_layers(graph: _Graph, network: SentimentRNN, sequence: str,
                      carry_state: bool = False) -> tuple[str, str]:
    """All recurrent layers on `sequence` [T, B, I]: (top outputs [T, B, D*H], top final h [D, B, H]).

    carry_state: each layer starts from inputs initial_h_input(layer) (and initial_c_input for LSTM)
    and its final states are the outputs final_h_output(layer) / final_c_output(layer)."""
    rnn = network.rnn
    config = network.config
    cell, size, directions = config.cell, config.hidden_size, config.num_directions
    kind = cell_kind(cell)
    suffixes = ["", "_reverse"][:directions]
    flatten_last_two = graph.constant("shape_keep2", np.array([0, 0, -1], dtype=np.int64))
    final = ""
    for layer in range(config.num_layers):
        def stacked(name: str, layer: int = layer) -> np.ndarray:  # both directions: [D, ...]
            return np.stack([_reordered(getattr(rnn, f"{name}_l{layer}{s}"), kind) for s in suffixes])

        w, r = stacked("weight_ih"), stacked("weight_hh")  # [D, G*H, I], [D, G*H, H]
        if rnn.bias:
            b = np.concatenate([stacked("bias_ih"), stacked("bias_hh")], axis=1)  # [D, 2*G*H]
        else:
            b = np.zeros((directions, 2 * w.shape[1]), dtype=np.float32)
        attrs: dict = {"hidden_size": size, "direction": "bidirectional" if directions == 2 else "forward",
                       **kind.onnx_attributes}
        if kind.onnx_activations:
            attrs["activations"] = list(kind.onnx_activations) * directions
        inputs = [sequence, graph.constant("W", w), graph.constant("R", r), graph.constant("B", b), INPUT_LENGTHS]
        names = [layer_states_output(layer)] + [graph.name(f"{cell}_l{layer}") for _ in range(2 if kind.has_memory else 1)]
        if carry_state:
            inputs.append(initial_h_input(layer))
            names[1] = final_h_output(layer)
            if kind.has_memory:
                inputs.append(initial_c_input(layer))
                names[2] = final_c_output(layer)
        outputs = graph.op(kind.onnx_op, inputs, names=names, **attrs)
        y, final = outputs[0], outputs[1]  # Y [T, D, B, H], Y_h [D, B, H]
        # [T, D, B, H] -> [T, B, D, H] -> [T, B, D*H]: the next layer's input, directions concatenated.
        sequence = graph.one("Reshape", [graph.one("Transpose", [y], perm=[0, 2, 1, 3]), flatten_last_two])
    return sequence, final


def _subword_means(graph: _Graph, network: SentimentRNN) -> str:
    """The mean n-gram vector per token [B, T, E], as nn.EmbeddingBag(mode="mean") with its padding
    row left out; zeros for a token without n-grams (the padding row is zeros)."""
    assert network.subword_embedding is not None
    pad = graph.constant("subword_pad", np.array(network.config.subword_buckets, dtype=np.int64))
    vectors = graph.one("Gather", [graph.parameter("subword_embedding", network, "subword_embedding.weight"),
                                   INPUT_SUBWORDS])  # [B, T, K, E]
    axis2 = graph.constant("axis2", np.array([2], dtype=np.int64))
    total = graph.one("ReduceSum", [vectors, axis2], keepdims=0)  # [B, T, E]
    real = graph.one("Cast", [graph.one("Not", [graph.one("Equal", [INPUT_SUBWORDS, pad])])], to=TensorProto.FLOAT)
    counts = graph.one("ReduceSum", [real, axis2], keepdims=1)  # [B, T, 1]
    counts = graph.one("Max", [counts, graph.constant("one_f", np.array(1.0, dtype=np.float32))])
    return graph.one("Div", [total, counts])


def _length_mask(graph: _Graph) -> str:
    """[B, T] bool: True where t < length (a real token)."""
    shape = graph.one("Shape", [INPUT_IDS])
    steps = graph.one("Gather", [shape, graph.constant("one", np.array(1, dtype=np.int64))], axis=0)
    positions = graph.one("Range", [graph.constant("zero", np.array(0, dtype=np.int64)), steps,
                                    graph.constant("one", np.array(1, dtype=np.int64))])  # [T]
    lengths = graph.one("Unsqueeze", [graph.one("Cast", [INPUT_LENGTHS], to=TensorProto.INT64),
                                      graph.constant("axis1", np.array([1], dtype=np.int64))])  # [B, 1]
    return graph.one("Less", [graph.one("Unsqueeze", [positions, graph.constant("axis0", np.array([0], dtype=np.int64))]),
                              lengths])  # [1, T] < [B, 1] -> [B, T]


def _pooled(graph: _Graph, network: SentimentRNN, outputs: str, final: str) -> str:
    """The pooled representation [B, D*H]: the network's pooling's own ONNX nodes (model/pooling.py)."""
    # Y_h [D, B, H] -> [B, D, H] -> [B, D*H]: forward final then backward final, as torch.cat does.
    ends = graph.one("Reshape", [graph.one("Transpose", [final], perm=[1, 0, 2]),
                                 graph.constant("shape_flat", np.array([0, -1], dtype=np.int64))])
    lengths = graph.one("Unsqueeze", [graph.one("Cast", [INPUT_LENGTHS], to=TensorProto.FLOAT),
                                      graph.constant("axis1", np.array([1], dtype=np.int64))])  # [B, 1]
    inputs = OnnxPoolingInputs(by_row=graph.one("Transpose", [outputs], perm=[1, 0, 2]),  # [B, T, D*H]
                               mask=_length_mask(graph), lengths=lengths, ends=ends, attention=network.attention)
    return POOLINGS_BY_NAME[network.config.pooling].onnx_nodes(graph, inputs)


def _embedded_sequence(graph: _Graph, network: SentimentRNN) -> tuple[str, list[onnx.ValueInfoProto]]:
    """Each token's input vector, time-major [T, B, E], and the graph inputs it reads."""
    if network.has_unfolded_subwords:
        raise ValueError("fold the known words' n-grams first (SentimentRNN.fold_known_subwords)")
    embedded = graph.one("Gather", [graph.parameter("embedding", network, "embedding.weight"), INPUT_IDS])  # [B, T, E]
    inputs = [helper.make_tensor_value_info(INPUT_IDS, TensorProto.INT64, ["batch", "steps"]),
              helper.make_tensor_value_info(INPUT_LENGTHS, TensorProto.INT32, ["batch"])]
    if network.subword_embedding is not None:
        embedded = graph.one("Add", [embedded, _subword_means(graph, network)])  # [B, T, E]
        inputs.append(helper.make_tensor_value_info(INPUT_SUBWORDS, TensorProto.INT64, ["batch", "steps", "ngrams"]))
    return graph.one("Transpose", [embedded], perm=[1, 0, 2]), inputs  # [T, B, E]: ONNX recurrences are time-major


def build_onnx_model(network: SentimentRNN) -> onnx.ModelProto:
    """The Predict forward of `network` (eval mode: no dropout) as a checked ONNX model.

    Outputs: OUTPUT_PROBABILITIES [B, C] and every layer's step states layer_states_output(layer)
    [T, D, B, H]. A unidirectional network's graph is also a stream's step (carries_state): each
    layer starts from the input initial_h_input(layer) [1, B, H] (and initial_c_input for LSTM;
    zeros for Predict and Trace) and its state after each row's last token is the output
    final_h_output(layer) [1, B, H] (final_c_output). One session then serves Predict, Trace and
    streams; a stream reads the top layer's states and the finals, and runs the pooling and the
    classifier outside the graph from a running carry (model/pooling.py, model/streaming.py),
    since they must go on from the chunks before.
    """
    config = network.config
    carry = carries_state(config)
    graph = _Graph()
    sequence, inputs = _embedded_sequence(graph, network)
    outputs, final = _recurrent_layers(graph, network, sequence, carry_state=carry)
    pooled = _pooled(graph, network, outputs, final)
    logits = graph.one("Gemm", [pooled, graph.constant("classifier_w", _array(network.classifier.weight)),
                                graph.constant("classifier_b", _array(network.classifier.bias))], transB=1)
    logits = graph.one("Div", [logits, graph.constant("temperature", np.array(config.temperature, dtype=np.float32))])
    graph.nodes.append(helper.make_node("Softmax", [logits], [OUTPUT_PROBABILITIES], axis=-1))
    graph_outputs = [helper.make_tensor_value_info(OUTPUT_PROBABILITIES, TensorProto.FLOAT, ["batch", len(config.labels)])]
    graph_outputs += [helper.make_tensor_value_info(layer_states_output(layer), TensorProto.FLOAT,
                                                    ["steps", config.num_directions, "batch", config.hidden_size])
                      for layer in range(config.num_layers)]
    if carry:
        state = [1, "batch", config.hidden_size]
        kinds = [(initial_h_input, final_h_output)] + ([(initial_c_input, final_c_output)]
                                                       if cell_kind(config.cell).has_memory else [])
        for layer in range(config.num_layers):
            for initial, final_state in kinds:
                inputs.append(helper.make_tensor_value_info(initial(layer), TensorProto.FLOAT, state))
                graph_outputs.append(helper.make_tensor_value_info(final_state(layer), TensorProto.FLOAT, state))
    model = helper.make_model(
        helper.make_graph(graph.nodes, f"{config.cell}_sentiment", inputs=inputs, outputs=graph_outputs,
                          initializer=graph.initializers),
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="rnn-sentiment",
    )
    onnx.checker.check_model(model)
    return model


def carries_state(config) -> bool:
    """Whether build_onnx_model's graph of a network with `config` takes and gives every layer's
    states (a stream's step): unidirectional ones only, since a backward state depends on the words
    not yet sent."""
    return not config.bidirectional
