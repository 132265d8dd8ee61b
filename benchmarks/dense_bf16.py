"""Time exact dense bfloat16 products of the size a dense simulation of LeNet needs.

    python benchmarks/dense_bf16.py [--batch_size 50] [--time_steps 20] [--repeats 5]

Could a simulator that recomputes every layer at every step, with products in
bfloat16, beat the event-driven kernel and still be exact? bfloat16 represents
every integer up to 256 exactly. So each int32 weight of
`spiking_utils.integer_weights` (below 2^29 in magnitude) is split into signed
8-bit digits. A spike frame (+1, 0 or -1 per input) times a digit column then
sums to an integer of at most 1,024 x 128 = 2^17 in magnitude, which float32
accumulates exactly in any order. The digits are stacked as extra output
columns, so every layer becomes one product per batch of --batch_size images
and --time_steps steps.

For every LeNet layer that receives spikes, this script times that product
with TensorFlow's XLA compiler (bfloat16 inputs, float32 output), on random
spike frames and digits of the layer's im2col shape. It checks each result
against NumPy's float64 product and prints the milliseconds per image of the
products alone. A dense simulator would also need the im2col gathers and the
neuron updates, so this is a lower bound of its time. Exits with 1 if a
product is not exact, and with 2 for invalid options or too little memory.
"""

import argparse
import math
import os
import sys
import time

import numpy as np
from model_options import MAX_TIME_STEPS, positive_int, time_step_count

from ann2snn.architectures import LENET
from ann2snn.spiking_utils import WEIGHT_GRID_BITS

# Signed 8-bit digits per weight: magnitudes below 2^(WEIGHT_GRID_BITS + 1), plus a sign.
NUM_DIGITS = math.ceil((WEIGHT_GRID_BITS + 2) / 8)
# Estimated bytes per element that main() keeps in memory at once for one product.
# Spike frames (14): int64 while drawn, then float32, bfloat16 and a float64 copy for the check.
# Result (24): float32 from TensorFlow and its output buffer, a float64 copy and NumPy's
# float64 product.
FRAME_BYTES = 14
RESULT_BYTES = 24
GIB = 1024 ** 3


def layer_products(batch_size, time_steps):
    """Return (name, rows, depth, columns) of the product of each LeNet layer that receives spikes."""
    products = []
    for layer, (input_shape, output_shape) in list(zip(LENET.hidden, LENET.layer_shapes()))[1:]:
        rows = batch_size * time_steps * output_shape[0] * output_shape[1]
        depth = layer.kernel_size * layer.kernel_size * input_shape[2]
        products.append((layer.name, rows, depth, NUM_DIGITS * layer.out_channels))
    return products


def largest_product_bytes(batch_size, time_steps):
    """Return (estimated bytes, layer name) of the product that needs the most memory."""
    return max((rows * (depth * FRAME_BYTES + columns * RESULT_BYTES), name)
               for name, rows, depth, columns in layer_products(batch_size, time_steps))


def available_memory_bytes():
    """Return MemAvailable of /proc/meminfo in bytes, or None if it cannot be read."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=positive_int, default=50,
                        help="images per product (default: 50, the batch size of the "
                             "Spiking_*.py scripts)")
    parser.add_argument("--time_steps", type=time_step_count, default=20,
                        help=f"time steps per product, 1 to {MAX_TIME_STEPS} (default: 20)")
    parser.add_argument("--repeats", type=positive_int, default=5,
                        help="timed products per layer, of which the fastest is reported "
                             "(default: 5)")
    args = parser.parse_args()
    # The memory is checked before TensorFlow is imported, because the import takes seconds.
    needed, layer = largest_product_bytes(args.batch_size, args.time_steps)
    available = available_memory_bytes()
    if available is not None and needed > available:
        parser.error(f"--batch_size {args.batch_size} and --time_steps {args.time_steps} need "
                     f"about {needed / GIB:.1f} GiB for the product of {layer}, but only "
                     f"{available / GIB:.1f} GiB of memory are available: use a smaller "
                     f"--batch_size or fewer --time_steps")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    @tf.function(jit_compile=True)
    def product(frames, digits):
        return tf.raw_ops.BatchMatMulV3(x=frames, y=digits, Tout=tf.float32)

    rng = np.random.default_rng(0)
    total = 0.0
    inexact = []
    print(f"{args.batch_size} images, {args.time_steps} steps, {NUM_DIGITS} weight digits")
    for name, rows, depth, columns in layer_products(args.batch_size, args.time_steps):
        frames = rng.integers(-1, 2, (rows, depth)).astype(np.float32)
        digits = rng.integers(-128, 128, (depth, columns)).astype(np.float32)
        frames_bf16, digits_bf16 = tf.cast(frames, tf.bfloat16), tf.cast(digits, tf.bfloat16)
        # The first call compiles the product for this shape, so it is not timed.
        result = product(frames_bf16, digits_bf16).numpy()
        exact = np.array_equal(result.astype(np.float64), frames.astype(np.float64) @ digits)
        fastest = math.inf
        for _ in range(args.repeats):
            start = time.perf_counter()
            product(frames_bf16, digits_bf16).numpy()
            fastest = min(fastest, time.perf_counter() - start)
        total += fastest
        if not exact:
            inexact.append(name)
        print(f"{name:6s} {rows:7d} x {depth:4d} by {depth:4d} x {columns:4d}: "
              f"{fastest * 1e3:8.2f} ms, {rows * depth * columns / fastest / 1e9:6.1f} G multiply-adds/s, "
              f"{'exact' if exact else 'NOT EXACT'}")
    print(f"products of all layers: {total * 1e3 / args.batch_size:.3f} ms per image")
    if inexact:
        sys.exit(f"error: the bfloat16 products of {', '.join(inexact)} differ from NumPy's float64 "
                 "products: this TensorFlow does not accumulate them exactly in float32")


if __name__ == "__main__":
    main()
