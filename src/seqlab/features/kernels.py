"""Which kernel each recurrent layer runs on a GPU (the run's lstm_kernel tag)."""

from __future__ import annotations

import keras


def recurrent_kernels(model: keras.Model, device: str) -> str:
    """Which kernel each LSTM/GRU layer runs: 'cudnn' or 'generic' on GPU, by Keras' own conditions (tanh and
    sigmoid activations, a bias, no unroll, no recurrent dropout, GRU reset_after); 'cpu' on CPU, 'none'
    without a recurrent layer. One word when all agree, else 'layer:kernel, ...'.
    """
    kernels = {}
    for layer in _flatten_layers(model):
        if not isinstance(layer, (keras.layers.LSTM, keras.layers.GRU)):
            continue
        if device != "gpu":
            kernels[layer.name] = "cpu"
            continue
        cell = layer.cell
        supported = (layer.use_cudnn in ("auto", True) and not cell.recurrent_dropout and not layer.unroll
                     and cell.use_bias and cell.activation is keras.activations.tanh
                     and cell.recurrent_activation is keras.activations.sigmoid
                     and (isinstance(layer, keras.layers.LSTM) or cell.reset_after))
        kernels[layer.name] = "cudnn" if supported else "generic"
    if not kernels:
        return "none"
    if len(set(kernels.values())) == 1:
        return next(iter(kernels.values()))
    return ", ".join(f"{name}:{kernel}" for name, kernel in kernels.items())


def _flatten_layers(layer):
    for inner in getattr(layer, "layers", []):  # a model's layers, nested models included
        if isinstance(inner, keras.layers.Bidirectional):
            yield from (inner.forward_layer, inner.backward_layer)
        else:
            yield inner
            yield from _flatten_layers(inner)
