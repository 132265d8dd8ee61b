"""Print the work floor of simulating a model: dense operations, SOPs, and BLAS speed here.

    python benchmarks/floor.py --model_dir DIR [--k 1] [--num_images 100] [--data_dir ./data]

For every layer that receives spikes it prints the dense multiply-accumulates
per image and time step (what a simulator that recomputes every layer at every
step must do) and the SOPs per image measured on the first --num_images test
images (what an event-driven simulator must do). The model may be LeNet or
the MLP. The totals leave out the first layer, which receives the image at step 0
only. It then times float32 and
float64 matrix products of the size of LeNet's largest layer with NumPy's BLAS
and prints the time these amounts of work take at that speed for the full test
set of 10,000 images and 20 time steps.
"""

import argparse
import time

import numpy as np
from model_options import add_model_options, load_model_and_images, spiking_network

FULL_TEST_SET = 10000
TIME_STEPS = 20


def gemm_flops_per_second(dtype, repeats=5):
    """Time a (4096 x 800) @ (800 x 64) product, the im2col shape of conv2 for 64 images."""
    rng = np.random.default_rng(0)
    left = rng.standard_normal((4096, 800)).astype(dtype)
    right = rng.standard_normal((800, 64)).astype(dtype)
    left @ right
    start = time.perf_counter()
    for _ in range(repeats):
        left @ right
    return 2 * 4096 * 800 * 64 * repeats / (time.perf_counter() - start)


def sops_per_layer(network, images, time_steps):
    """Return (SOPs per image into each hidden layer, SOPs per image in total)."""
    network.reset(len(images))
    received = np.zeros(len(network.layers))
    total = 0
    originals = [layer.step for layer in network.layers]

    def counting(index, step):
        def wrapped(inputs):
            if index > 0:
                per_position = np.count_nonzero(inputs, axis=(0, 3))
                received[index] += (per_position * network.layers[index].input_fan_out).sum()
            return step(inputs)
        return wrapped

    for index, step in enumerate(originals):
        network.layers[index].step = counting(index, step)
    for time_step in range(time_steps):
        _, _, sops = network.step(images, time_step)
        total += sops
    for index, step in enumerate(originals):
        network.layers[index].step = step
    return received / len(images), total / len(images)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_options(parser, 100, "first test images for the SOP count",
                      model_help="folder of a quantized LeNet or MLP model_fashion_mnist.npz")
    args = parser.parse_args()

    model, images, _ = load_model_and_images(args)
    arch = model.architecture
    network = spiking_network(model)
    sops, sops_per_image = sops_per_layer(network, images, TIME_STEPS)

    print(f"{arch.name} k={model.k}, {len(images)} images, {TIME_STEPS} time steps")
    total_macs = 0
    kernel_shapes, output_shape = arch.weight_shapes()
    for index, (layer, (_, out_shape), kernel) in enumerate(
            zip(arch.hidden, arch.layer_shapes(), kernel_shapes)):
        macs = out_shape[0] * out_shape[1] * out_shape[2] * kernel[0] * kernel[1] * kernel[2]
        if index == 0:
            print(f"  {layer.name:8s} dense {macs / 1e6:6.2f} M MAC once per image (the image "
                  f"arrives at step 0 only)")
            continue
        total_macs += macs
        print(f"  {layer.name:8s} dense {macs / 1e6:6.2f} M MAC per step")
    output_macs = output_shape[0] * output_shape[1]
    total_macs += output_macs
    print(f"  {'output':8s} dense {output_macs / 1e6:6.2f} M MAC per step")
    print(f"  total    dense {total_macs / 1e6:6.2f} M MAC per image per step (without the first layer); "
          f"{total_macs * TIME_STEPS / 1e6:.1f} M MAC per image over {TIME_STEPS} steps")

    for layer, value in zip(arch.hidden[1:], sops[1:]):
        print(f"  SOPs into {layer.name:8s} {value / 1e6:6.2f} M per image")
    print(f"  SOPs into {'output':8s} {(sops_per_image - sops.sum()) / 1e6:6.2f} M per image")
    print(f"  SOPs in total       {sops_per_image / 1e6:6.2f} M per image over {TIME_STEPS} steps")

    flops32 = gemm_flops_per_second(np.float32)
    flops64 = gemm_flops_per_second(np.float64)
    print(f"BLAS here: float32 {flops32 / 1e9:.1f} GFLOP/s, float64 {flops64 / 1e9:.1f} GFLOP/s "
          f"(4096x800 @ 800x64)")
    dense_flop = 2 * total_macs * TIME_STEPS * FULL_TEST_SET
    print(f"floor for {FULL_TEST_SET} images: dense float32 {dense_flop / flops32:.1f} s, "
          f"dense float64 {dense_flop / flops64:.1f} s; one float64 addition per SOP at the GEMM's "
          f"multiply-add rate (half its FLOP rate) {sops_per_image * FULL_TEST_SET / (flops64 / 2):.1f} s")


if __name__ == "__main__":
    main()
