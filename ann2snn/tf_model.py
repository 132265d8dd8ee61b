"""TensorFlow 1 graph of the quantized (or full-precision) ANN.

How the pieces chain, in the vocabulary of TensorFlow's CIFAR-10 tutorial:

    inference(images, arch, k, is_train)  ->  logits
    loss(logits, labels)                  ->  mean cross-entropy
    train_op(total_loss, learning_rate)   ->  Adam step plus batch-norm updates

`inference` is called twice: once for the training graph (batch statistics,
moving averages updated) and once, with reuse, for the test graph (moving
averages used). TensorLayer 2 layers do not run in `tf.compat.v1` graph mode,
so the layers are small functions over `tf.nn` ops.

Variable names follow the layer names of `architectures`, e.g. `conv1/W`,
`conv1/beta`, `conv1/gamma`, `conv1/moving_mean`, `conv1/moving_variance`,
`output/W`; `parameter_variables` lists them in the npz order.
"""

import tensorflow as tf

tf1 = tf.compat.v1

# Defaults of TensorLayer 1.x's BatchNormLayer; the paper's scripts were written with TensorLayer.
BN_DECAY = 0.9
BN_EPSILON = 1e-5
# Rounding offset of the quantizer: values exactly halfway between two levels round up.
QUANTIZER_OFFSET = 1e-5
# TensorLayer 1's default initializers: conv kernels N(0, 0.02), dense N(0, 0.1),
# truncated at two standard deviations; gamma N(1, 0.002).
CONV_INIT_STDDEV = 0.02
DENSE_INIT_STDDEV = 0.1
GAMMA_INIT_STDDEV = 0.002


def quantize(x, k):
    """Round `x` to a multiple of 1/2^k, with a straight-through gradient.

    Forward: round(x * 2^k + 1e-5) / 2^k. Backward: the gradient passes
    unchanged, as if the quantizer were the identity.
    """
    scale = float(2 ** k)
    rounded = tf.round(x * scale + QUANTIZER_OFFSET) / scale
    return x + tf.stop_gradient(rounded - x)


def _batch_norm(x, is_train):
    channels = x.shape[-1]
    beta = tf1.get_variable("beta", [channels], initializer=tf1.zeros_initializer())
    gamma = tf1.get_variable(
        "gamma", [channels],
        initializer=tf1.random_normal_initializer(mean=1.0, stddev=GAMMA_INIT_STDDEV))
    moving_mean = tf1.get_variable(
        "moving_mean", [channels], initializer=tf1.zeros_initializer(), trainable=False)
    moving_variance = tf1.get_variable(
        "moving_variance", [channels], initializer=tf1.ones_initializer(), trainable=False)

    if not is_train:
        return tf.nn.batch_normalization(x, moving_mean, moving_variance, beta, gamma, BN_EPSILON)

    mean, variance = tf.nn.moments(x, axes=[0, 1, 2])
    update_mean = tf1.assign(moving_mean, moving_mean * BN_DECAY + mean * (1.0 - BN_DECAY))
    update_variance = tf1.assign(
        moving_variance, moving_variance * BN_DECAY + variance * (1.0 - BN_DECAY))
    tf1.add_to_collection(tf1.GraphKeys.UPDATE_OPS, update_mean)
    tf1.add_to_collection(tf1.GraphKeys.UPDATE_OPS, update_variance)
    return tf.nn.batch_normalization(x, mean, variance, beta, gamma, BN_EPSILON)


def hidden_layer(x, layer, k, is_train):
    """Apply one hidden layer: VALID convolution without bias, batch norm, ReLU, quantizer.

    `k` is the quantization level; None builds the full-precision layer (no quantizer).
    """
    with tf1.variable_scope(layer.name):
        in_channels = x.shape[-1]
        kernel = tf1.get_variable(
            "W", [layer.kernel_size, layer.kernel_size, in_channels, layer.out_channels],
            initializer=tf1.truncated_normal_initializer(stddev=CONV_INIT_STDDEV))
        height, width = x.shape[1], x.shape[2]
        if layer.kernel_size == height and layer.kernel_size == width:
            # A kernel that covers the whole input is a dense layer. TensorFlow 2.21's
            # Conv2DBackpropInput takes over a second per LeNet batch on this shape,
            # while the equivalent matmul takes milliseconds.
            flat = tf.reshape(x, [-1, height * width * in_channels])
            z = tf.matmul(flat, tf.reshape(kernel, [-1, layer.out_channels]))
            z = tf.reshape(z, [-1, 1, 1, layer.out_channels])
        else:
            z = tf.nn.conv2d(x, kernel, strides=[1, layer.stride, layer.stride, 1],
                             padding="VALID")
        y = tf.nn.relu(_batch_norm(z, is_train))
        return y if k is None else quantize(y, k)


def inference(images, arch, k, is_train, reuse=False):
    """Build the network on `images` (N, 28, 28, 1) and return the logits (N, classes)."""
    with tf1.variable_scope("model", reuse=reuse):
        x = images
        for layer in arch.hidden:
            x = hidden_layer(x, layer, k, is_train)
        x = tf.reshape(x, [-1, arch.flat_features()])
        with tf1.variable_scope("output"):
            weights = tf1.get_variable(
                "W", [arch.flat_features(), arch.num_classes],
                initializer=tf1.truncated_normal_initializer(stddev=DENSE_INIT_STDDEV))
            return tf.matmul(x, weights)


def loss(logits, labels):
    """Return the mean softmax cross-entropy (the softmax is inside the loss, not the model)."""
    return tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


def accuracy(logits, labels):
    """Return the fraction of `labels` that the argmax of `logits` predicts."""
    correct = tf.equal(tf.argmax(logits, axis=1), tf.cast(labels, tf.int64))
    return tf.reduce_mean(tf.cast(correct, tf.float32))


def correct_count(logits, labels):
    """Return how many `labels` the argmax of `logits` predicts (int32)."""
    correct = tf.equal(tf.argmax(logits, axis=1), tf.cast(labels, tf.int64))
    return tf.reduce_sum(tf.cast(correct, tf.int32))


def train_op(total_loss, learning_rate):
    """Return an op that takes one Adam step and updates the batch-norm moving averages."""
    optimizer = tf1.train.AdamOptimizer(learning_rate)
    step = optimizer.minimize(total_loss)
    return tf.group(step, *tf1.get_collection(tf1.GraphKeys.UPDATE_OPS))


def parameter_variables(arch):
    """Return the model's variables in the npz order of `arch.param_shapes()`."""
    by_name = {v.op.name: v for v in tf1.global_variables()}
    ordered = []
    for name, _ in arch.param_shapes():
        ordered.append(by_name[f"model/{name}"])
    return ordered
