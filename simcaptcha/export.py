"""Export a trained classifier to ONNX, with its captcha spec, for solving without TensorFlow.

The exporter walks the Keras graph node by node and writes the ONNX operator for each layer
the classifiers are built from (Conv2D, BatchNormalization, ReLU, MaxPooling2D, ZeroPadding2D,
Cropping2D, Flatten, Dropout, Dense, Softmax, Average, Identity and nested models, as
`simcaptcha ensemble` makes them). Convolutions run in ONNX's NCHW layout; the flattened
windows go back to Keras's NHWC order first, so the dense weights apply unchanged. The model
takes the captcha as it is, uint8 RGB (N, 50, 100, 3), does `preprocess()` itself (so any
ONNX runtime, in any language, needs nothing else), and gives one output `probs`,
(N, 4, 36). The spec travels in the file's metadata (`simcaptcha_spec`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .files import InputError, write_atomic
from .estimate import AccuracyCalibration, model_calibration
from .onnx_backend import CALIBRATION_KEY, SPEC_KEY
from .preprocess import _LUMA_OVER_255
from .solver import classifier_path, load_classifier
from .spec import CaptchaSpec

OPSET = 17


def exported_spec(spec: CaptchaSpec) -> dict:
    """The captcha spec an exported model carries, with its input: "rgb", uint8 (N, height, width, 3),
    preprocessed inside the model exactly as `preprocess()` does."""
    return {**spec.to_dict(), "input": "rgb", "format": 1}


def _preprocess(g: _Graph, rgb: str, ink: str, height: int, width: int) -> str:
    """preprocess() in ONNX: (luma + min(R, G, B)) / 255 - 1, uint8 (N, H, W, 3) in, float (N, 1, H, W) out.

    The bytes are turned to NCHW first; luma is then a 1x1 convolution and whiteness a minimum over
    the channel axis, both of which ONNX Runtime runs fast in that layout.
    """
    from onnx import TensorProto

    planes = g.op("Transpose", [rgb], "to_nchw", perm=[0, 3, 1, 2])
    x = g.op("Cast", [planes], "rgb_float", to=TensorProto.FLOAT)
    luma = g.op("Conv", [x, g.const("luma", _LUMA_OVER_255.reshape(1, 3, 1, 1))], "luma", kernel_shape=[1, 1])
    white = g.op("ReduceMin", [x], "whiteness", axes=[1], keepdims=1)
    white = g.op("Mul", [white, g.const("inv255", np.array(1 / 255.0, np.float32))], "whiteness")
    mean = g.op("Add", [luma, white], "input")
    one = g.const("one", np.array(1.0, np.float32))
    if ink == "dark":  # turned over, as preprocess() does for dark ink: 1 - mean
        return g.op("Sub", [one, mean], "input")
    light = g.op("Sub", [mean, one], "input")
    if ink == "light":
        return light
    return _per_captcha_polarity(g, light, one, height, width)


def _per_captcha_polarity(g: _Graph, light: str, one: str, height: int, width: int) -> str:
    """preprocess()'s ink "mixed" on (N, 1, H, W): ground (the median) to -1, text turned bright, clipped.

    ONNX has no median: TopK of the largest half plus one gives it, as numpy computes it (the middle
    value, or the mean of the two middle ones).
    """
    n = height * width
    k = n // 2 + 1
    flat = g.op("Reshape", [light, g.const("rows", np.array([0, n], np.int64))], "flat")
    top, _ = g.op_n("TopK", [flat, g.const("half", np.array([k], np.int64))], "half", 2, axis=1, largest=1, sorted=1)
    middle = g.op("Slice", [top, g.const("start", np.array([k - (2 if n % 2 == 0 else 1)], np.int64)),
                            g.const("end", np.array([k], np.int64)), g.const("axis1", np.array([1], np.int64))], "middle")
    median = g.op("ReduceMean", [middle], "median", axes=[1], keepdims=1)
    average = g.op("ReduceMean", [flat], "average", axes=[1], keepdims=1)
    darker = g.op("Less", [average, median], "darker")
    sign = g.op("Where", [darker, g.const("minus", np.array(-1.0, np.float32)), g.const("plus", np.array(1.0, np.float32))], "sign")
    shifted = g.op("Mul", [g.op("Sub", [flat, median], "centred"), sign], "turned")
    shifted = g.op("Sub", [shifted, one], "grounded")
    clipped = g.op("Clip", [shifted, g.const("lo", np.array(-1.0, np.float32)), g.const("hi", np.array(1.0, np.float32))], "clipped")
    return g.op("Reshape", [clipped, g.const("nchw_shape", np.array([-1, 1, height, width], np.int64))], "input")


class _Graph:
    def __init__(self):
        self.nodes, self.inits, self.count = [], [], 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, hint: str, value) -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, kind: str, inputs: list[str], hint: str, **attrs) -> str:
        return self.op_n(kind, inputs, hint, 1, **attrs)[0]

    def op_n(self, kind: str, inputs: list[str], hint: str, outputs: int, **attrs) -> list[str]:
        """A node with `outputs` outputs (TopK has two); returns their names."""
        from onnx import helper

        outs = [self.name(hint) for _ in range(outputs)]
        self.nodes.append(helper.make_node(kind, inputs, outs, name=outs[0], **attrs))
        return outs


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding: the odd pixel goes at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _activation(g: _Graph, x: str, name: str, hint: str) -> str:
    if name == "linear":
        return x
    if name == "relu":
        return g.op("Relu", [x], hint)
    if name == "softmax":
        return g.op("Softmax", [x], hint, axis=-1)
    raise InputError(f"cannot export activation {name!r} to ONNX")


def _layer(g: _Graph, layer, x: str, layout: str, in_shape) -> tuple[str, str]:
    """Emit one Keras layer; returns (output name, its layout: 'nchw' or 'flat')."""
    kind = layer.__class__.__name__
    if kind == "Conv2D":
        cfg = layer.get_config()
        if cfg["dilation_rate"] != (1, 1) or cfg["groups"] != 1:
            raise InputError(f"cannot export {layer.name}: dilated or grouped convolution")
        kh, kw = cfg["kernel_size"]
        sh, sw = cfg["strides"]
        if cfg["padding"] == "same":
            (pt, pb), (pl, pr) = _same_pads(in_shape[1], kh, sh), _same_pads(in_shape[2], kw, sw)
        else:
            pt = pb = pl = pr = 0
        inputs = [x, g.const("w", np.transpose(layer.kernel.numpy(), (3, 2, 0, 1)))]
        if cfg["use_bias"]:
            inputs.append(g.const("b", layer.bias.numpy()))
        y = g.op("Conv", inputs, layer.name, kernel_shape=[kh, kw], strides=[sh, sw], pads=[pt, pl, pb, pr])
        return _activation(g, y, cfg["activation"], layer.name), "nchw"
    if kind == "BatchNormalization":
        channels = in_shape[-1]
        gamma = layer.gamma.numpy() if layer.scale else np.ones(channels, np.float32)
        beta = layer.beta.numpy() if layer.center else np.zeros(channels, np.float32)
        inputs = [x, g.const("gamma", gamma), g.const("beta", beta),
                  g.const("mean", layer.moving_mean.numpy()), g.const("var", layer.moving_variance.numpy())]
        return g.op("BatchNormalization", inputs, layer.name, epsilon=float(layer.epsilon)), layout
    if kind == "ReLU":
        cfg = layer.get_config()
        if cfg.get("max_value") is not None or cfg.get("negative_slope", 0) or cfg.get("threshold", 0):
            raise InputError(f"cannot export {layer.name}: only a plain ReLU")
        return g.op("Relu", [x], layer.name), layout
    if kind == "MaxPooling2D":
        cfg = layer.get_config()
        if cfg["padding"] != "valid":
            raise InputError(f"cannot export {layer.name}: only 'valid' pooling")
        return g.op("MaxPool", [x], layer.name, kernel_shape=list(cfg["pool_size"]), strides=list(cfg["strides"])), "nchw"
    if kind == "ZeroPadding2D":
        (top, bottom), (left, right) = layer.get_config()["padding"]
        pads = g.const("pads", np.array([0, 0, top, left, 0, 0, bottom, right], np.int64))
        return g.op("Pad", [x, pads], layer.name), "nchw"
    if kind == "Cropping2D":
        (top, bottom), (left, right) = layer.get_config()["cropping"]
        h, w = in_shape[1], in_shape[2]
        starts = g.const("starts", np.array([top, left], np.int64))
        ends = g.const("ends", np.array([h - bottom, w - right], np.int64))
        axes = g.const("axes", np.array([2, 3], np.int64))
        return g.op("Slice", [x, starts, ends, axes], layer.name), "nchw"
    if kind == "Flatten":
        if layout == "nchw":  # Keras flattens rows, columns, channels
            x = g.op("Transpose", [x], "to_nhwc", perm=[0, 2, 3, 1])
        return g.op("Reshape", [x, g.const("shape", np.array([0, -1], np.int64))], layer.name), "flat"
    if kind in {"Dropout", "Identity", "InputLayer"}:
        return x, layout
    if kind == "Dense":
        cfg = layer.get_config()
        y = g.op("MatMul", [x, g.const("w", layer.kernel.numpy())], layer.name)
        if cfg["use_bias"]:
            y = g.op("Add", [y, g.const("b", layer.bias.numpy())], layer.name)
        return _activation(g, y, cfg["activation"], layer.name), "seq" if layout == "seq" else "flat"
    if kind == "Softmax":
        return g.op("Softmax", [x], layer.name, axis=-1), layout
    if kind == "Permute" and tuple(layer.get_config()["dims"]) == (2, 1, 3) and layout == "nchw":
        # Keras (N, H, W, C) -> (N, W, H, C); from ONNX's (N, C, H, W) that is one transpose
        return g.op("Transpose", [x], layer.name, perm=[0, 3, 2, 1]), "nwhc"
    if kind == "Reshape" and layout == "nwhc":  # (N, W, H, C) -> (N, W, H * C): a sequence of columns
        shape = g.const("shape", np.array([0, 0, -1], np.int64))
        return g.op("Reshape", [x, shape], layer.name), "seq"
    if kind == "Conv1D" and layout == "seq":
        cfg = layer.get_config()
        if cfg["dilation_rate"] != (1,) or cfg["groups"] != 1 or cfg["strides"] != (1,):
            raise InputError(f"cannot export {layer.name}: only plain stride-1 1-D convolutions")
        (k,) = cfg["kernel_size"]
        pads = _same_pads(in_shape[1], k, 1) if cfg["padding"] == "same" else (0, 0)
        ncw = g.op("Transpose", [x], "to_ncw", perm=[0, 2, 1])
        inputs = [ncw, g.const("w", np.transpose(layer.kernel.numpy(), (2, 1, 0)))]
        if cfg["use_bias"]:
            inputs.append(g.const("b", layer.bias.numpy()))
        y = g.op("Conv", inputs, layer.name, kernel_shape=[k], pads=[pads[0], pads[1]])
        y = g.op("Transpose", [y], "to_nwc", perm=[0, 2, 1])
        return _activation(g, y, cfg["activation"], layer.name), "seq"
    raise InputError(f"cannot export layer {layer.name} ({kind}) to ONNX")


def _walk(g: _Graph, model, inputs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Emit a Keras functional model's graph given its inputs' (name, layout); returns its outputs'."""
    import keras

    names = {id(t): v for t, v in zip(model.inputs, inputs)}
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            op = node.operation
            if op.__class__.__name__ == "InputLayer":
                continue
            ins = [names[id(t)] for t in node.input_tensors]
            if isinstance(op, keras.Model):
                outs = _walk(g, op, ins)
            elif op.__class__.__name__ == "Average":
                total = g.op("Sum", [n for n, _ in ins], op.name)
                outs = [(g.op("Mul", [total, g.const("inv", np.array(1.0 / len(ins), np.float32))], op.name), ins[0][1])]
            else:
                shape = tuple(node.input_tensors[0].shape)
                outs = [_layer(g, op, ins[0][0], ins[0][1], shape)]
            for t, v in zip(node.output_tensors, outs):
                names[id(t)] = v
    return [names[id(t)] for t in model.outputs]


def to_onnx(model, spec: CaptchaSpec, calibration: AccuracyCalibration | None = None):
    """A Keras classifier (N, H, W, 1) -> L x (N, classes), or one CTC output (N, T, classes + 1), as an
    onnx.ModelProto taking uint8 RGB `image` (N, H, W, 3), preprocessing included, with one output
    `probs`: (N, L, classes) or (N, T, classes + 1). The spec (and the calibration, if any) go in its metadata."""
    import onnx
    from onnx import TensorProto, helper

    g = _Graph()
    nchw = _preprocess(g, "image", spec.ink, spec.height, spec.width)
    heads = _walk(g, model, [(nchw, "nchw")])
    if len(model.outputs) == 1 and len(model.outputs[0].shape) == 3:  # ctc: (N, T, classes + 1) already
        g.nodes.append(helper.make_node("Identity", [heads[0][0]], ["probs"], name="probs"))
        out_shape = ["batch", int(model.outputs[0].shape[1]), int(model.outputs[0].shape[2])]
    else:
        axis = g.const("axis", np.array([1], np.int64))
        stacked = [g.op("Unsqueeze", [name, axis], "head") for name, _ in heads]
        g.nodes.append(helper.make_node("Concat", stacked, ["probs"], axis=1, name="probs"))
        out_shape = ["batch", len(heads), int(model.outputs[0].shape[-1])]
    graph = helper.make_graph(
        g.nodes, "simcaptcha_classifier",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", spec.height, spec.width, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, out_shape)],
        g.inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="simcaptcha")
    proto.ir_version = 8  # readable by every onnxruntime of the last years
    props = {SPEC_KEY: json.dumps(exported_spec(spec))}
    if calibration is not None:
        props[CALIBRATION_KEY] = json.dumps(calibration.to_dict())
    helper.set_model_props(proto, props)
    onnx.checker.check_model(proto)
    return proto


def export_onnx(model_path: str | Path | None, out: str | Path) -> dict:
    """Load a classifier (None: the shipped one) and write it as ONNX to `out` atomically; returns the spec."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise InputError("exporting needs the onnx package: pip install 'simcaptcha[onnx]'") from None
    model, spec = load_classifier(model_path)
    proto = to_onnx(model, spec, model_calibration(classifier_path(model_path)))
    write_atomic(out, proto.SerializeToString())
    return exported_spec(spec)
