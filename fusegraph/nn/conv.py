"""Conv1D / Conv2D: convolution, then bias, then activation, on NC(L|HW) activations."""

from __future__ import annotations

from torch import nn

from ..ir import GraphError, TensorType
from ..ir.ops.conv import as_tuple, resolve_padding, torch_pad_arg
from .activations import activation_module, activation_step, check_activation, weight_init
from .layer import Layer, copy_into, flag, positive_int


def param_dtype(t: TensorType) -> str:
    return t.dtype if t.is_float else "float32"


class _Conv(Layer):
    ndim = 2

    def __init__(self, filters: int, kernel_size, strides=1, padding="valid", dilation=1,
                 activation: str | None = None, use_bias: bool = True, groups: int = 1, name: str | None = None) -> None:
        """`groups` (torch's, Keras': the channels in that many groups, each filter reading its group's
        channels only; groups = input channels is a depthwise convolution)."""
        super().__init__(name)
        self.filters, self.kernel_size, self.strides = filters, kernel_size, strides
        self.padding, self.dilation, self.activation, self.use_bias = padding, dilation, activation, use_bias
        self.groups = groups
        where = self.describe()
        self.filters = positive_int(filters, "filters", where)
        self.use_bias = flag(use_bias, "use_bias", where)
        self.groups = positive_int(groups, "groups", where)
        if self.filters % self.groups:
            raise self.fail(f"groups={groups} must divide filters={filters}")
        try:
            self.kernel = as_tuple(kernel_size, self.ndim, "kernel_size")
            self.stride = as_tuple(strides, self.ndim, "strides")
            self.dilations = as_tuple(dilation, self.ndim, "dilation")
            resolve_padding(padding, (1,) * self.ndim, self.kernel, self.stride, self.dilations)
        except GraphError as error:
            raise self.fail(str(error)) from None
        self.act = check_activation(activation, where)
        self.pads: tuple[tuple[int, int], ...] = ()
        self.in_channels = 0

    def config(self):
        return {"filters": self.filters, "kernel_size": self.kernel_size, "strides": self.strides,
                "padding": self.padding, "activation": self.activation, **({"groups": self.groups} if self.groups != 1
                                                                            else {})}

    def emit(self, b, inputs, name):
        (x,) = inputs
        layout = "(batch, channels, length)" if self.ndim == 1 else "(batch, channels, height, width)"
        if x.type.rank != self.ndim + 2:
            raise GraphError(f"layer '{name}' ({type(self).__name__}) takes {layout}, got {x.type}; "
                             + ("add a channel axis (Input((1, length)))" if self.ndim == 1 else "check the Input shape"))
        self.in_channels = x.type.shape[1]
        if self.in_channels % self.groups:
            raise GraphError(f"layer '{name}' ({type(self).__name__}): groups={self.groups} must divide the input's "
                             f"{self.in_channels} channels")
        self.pads = resolve_padding(self.padding, x.type.shape[2:], self.kernel, self.stride, self.dilations)
        dtype = param_dtype(x.type)
        w = b.parameter(f"{name}.weight",
                        TensorType((self.filters, self.in_channels // self.groups, *self.kernel), dtype),
                        weight_init(self.act), layer=name)
        geometry = {"stride": self.stride, "padding": self.pads, "dilation": self.dilations}
        steps = [(f"conv{self.ndim}d", [w], geometry | ({"groups": self.groups} if self.groups > 1 else {}), "conv")]
        if self.use_bias:
            bias = b.parameter(f"{name}.bias", TensorType((self.filters,), dtype), "zeros", layer=name)
            steps.append(("bias_add", [bias], {"axis": 1}, "bias_add"))
        if (act := activation_step(self.act)) is not None:
            steps.append((act[0], [], act[1], "act"))
        return [self.pipeline(b, x, name, steps)]

    def torch_module(self, params):
        conv_cls = nn.Conv1d if self.ndim == 1 else nn.Conv2d
        symmetric = all(b == e for b, e in self.pads)
        conv = conv_cls(self.in_channels, self.filters, self.kernel, stride=self.stride,
                        padding=tuple(b for b, _ in self.pads) if symmetric else 0,
                        dilation=self.dilations, bias=self.use_bias, groups=self.groups)
        mapping = {"weight": f"{self.name}.weight"} | ({"bias": f"{self.name}.bias"} if self.use_bias else {})
        copy_into(conv, params, mapping)
        pad_cls = nn.ConstantPad1d if self.ndim == 1 else nn.ConstantPad2d
        layers = [] if symmetric else [pad_cls(tuple(torch_pad_arg(self.pads)), 0.0)]
        return nn.Sequential(*layers, conv, activation_module(self.act))


class Conv1D(_Conv):
    ndim = 1


class Conv2D(_Conv):
    ndim = 2
