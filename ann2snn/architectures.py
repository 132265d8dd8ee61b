"""Layer descriptions of the paper's two Fashion-MNIST networks.

One description drives everything: the TensorFlow graph (`tf_model`), the NumPy
spiking network (`spiking_utils`), the reference quantized ANN (`quantized_ann`),
the neuron count and the ANN operation count used by the figures.

Every hidden layer is a convolution without bias, then batch norm, ReLU and the
quantizer. The output layer is a dense layer without bias or batch norm.
"""

from dataclasses import dataclass

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10


@dataclass(frozen=True)
class ConvLayer:
    """A hidden layer: VALID convolution (no bias), batch norm, ReLU, quantizer."""

    name: str
    kernel_size: int
    out_channels: int
    stride: int = 1


@dataclass(frozen=True)
class Architecture:
    """A network: hidden convolution layers, then a dense output layer."""

    name: str
    hidden: tuple
    num_classes: int = NUM_CLASSES
    input_shape: tuple = IMAGE_SHAPE

    def layer_shapes(self):
        """Return a list of (input HWC shape, output HWC shape) per hidden layer."""
        shapes = []
        height, width, channels = self.input_shape
        for layer in self.hidden:
            out_h = (height - layer.kernel_size) // layer.stride + 1
            out_w = (width - layer.kernel_size) // layer.stride + 1
            if out_h < 1 or out_w < 1:
                raise ValueError(
                    f"layer {layer.name}: kernel {layer.kernel_size} does not fit "
                    f"an input of {height}x{width}")
            shapes.append(((height, width, channels), (out_h, out_w, layer.out_channels)))
            height, width, channels = out_h, out_w, layer.out_channels
        return shapes

    def weight_shapes(self):
        """Return the HWIO shape of every hidden kernel, then the output (in, classes) shape."""
        shapes = []
        for layer, (in_shape, _) in zip(self.hidden, self.layer_shapes()):
            shapes.append((layer.kernel_size, layer.kernel_size, in_shape[2], layer.out_channels))
        return shapes, (self.flat_features(), self.num_classes)

    def flat_features(self):
        """Return the number of features the output layer receives (last hidden layer, flattened)."""
        height, width, channels = self.layer_shapes()[-1][1]
        return height * width * channels

    def param_shapes(self):
        """Return (name, shape) for every parameter, in the npz order of the paper's files.

        Per hidden layer: weights (HWIO), beta, gamma, moving mean, moving variance;
        then the output weights.
        """
        kernel_shapes, output_shape = self.weight_shapes()
        entries = []
        for layer, kernel_shape in zip(self.hidden, kernel_shapes):
            channels = (kernel_shape[3],)
            entries.append((f"{layer.name}/W", kernel_shape))
            entries.append((f"{layer.name}/beta", channels))
            entries.append((f"{layer.name}/gamma", channels))
            entries.append((f"{layer.name}/moving_mean", channels))
            entries.append((f"{layer.name}/moving_variance", channels))
        entries.append(("output/W", output_shape))
        return entries

    def neuron_count(self):
        """Return the number of hidden (spiking) neurons of one image."""
        return sum(h * w * c for _, (h, w, c) in self.layer_shapes())

    def ann_operation_count(self):
        """Return the ANN's operations per image, counted as the paper compares them to SOPs.

        Multiply-accumulates of every layer except the first (which sees the image),
        output layer included; one multiply-accumulate counts as three additions
        because a multiplication is weighted as two additions.
        """
        macs = 0
        kernel_shapes, output_shape = self.weight_shapes()
        for index, (kernel_shape, (_, out_shape)) in enumerate(zip(kernel_shapes, self.layer_shapes())):
            if index == 0:
                continue
            kh, kw, cin, _ = kernel_shape
            macs += out_shape[0] * out_shape[1] * out_shape[2] * kh * kw * cin
        macs += output_shape[0] * output_shape[1]
        return 3 * macs


# LeNet 32C5-P2-64C5-P2-1024: the 2x2 stride-2 convolutions stand in for pooling.
LENET = Architecture(
    name="LeNet",
    hidden=(
        ConvLayer("conv1", 5, 32),
        ConvLayer("pool1", 2, 32, stride=2),
        ConvLayer("conv2", 5, 64),
        ConvLayer("pool2", 2, 64, stride=2),
        ConvLayer("fc1", 4, 1024),
    ),
)

# MLP 400-400: a 28x28 VALID convolution is a dense layer on the image.
MLP = Architecture(
    name="MLP",
    hidden=(
        ConvLayer("fc1", 28, 400),
        ConvLayer("fc2", 1, 400),
    ),
)

ARCHITECTURES = {arch.name: arch for arch in (LENET, MLP)}


def get_architecture(name):
    """Return the architecture called `name` ("LeNet" or "MLP")."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(
            f"unknown architecture {name!r}: expected one of {sorted(ARCHITECTURES)}") from None
