"""Print the events engine's wall time per image, for quick before-and-after comparisons.

    python benchmarks/kernel_speed.py --model_dir DIR [--k 1] [--num_images 2000]
        [--repeats 2] [--time_steps 20] [--batch_size 50] [--data_dir ./data]

Runs `simulation.simulate` on the first --num_images test images, --repeats
times, with the events engine, no comparison with the NumPy ANN and no
progress bar. One untimed batch comes first, which compiles the Numba kernels
or loads them from the cache. Prints the milliseconds per image of each run.
It runs no reference simulator: benchmark_simulation.py does, for the ratio.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ann2snn.data import load_test_set  # noqa: E402
from ann2snn.model_file import MODEL_FILE_NAME, load_model  # noqa: E402
from ann2snn.simulation import simulate  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", required=True, help="folder of a model_fashion_mnist.npz")
    parser.add_argument("--k", type=int, default=1, help="quantization level of the model (default: 1)")
    parser.add_argument("--num_images", type=int, default=2000, help="test images per run (default: 2000)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs (default: 2)")
    parser.add_argument("--time_steps", type=int, default=20, help="time steps (default: 20)")
    parser.add_argument("--batch_size", type=int, default=50, help="images per batch (default: 50)")
    parser.add_argument("--data_dir", default="./data", help="Fashion-MNIST folder (default: ./data)")
    args = parser.parse_args()
    for name in ("num_images", "repeats", "time_steps", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} {getattr(args, name)} is invalid: use at least 1")

    model = load_model(os.path.join(args.model_dir, MODEL_FILE_NAME), k=args.k)
    images, labels = load_test_set(args.data_dir)
    images, labels = images[:args.num_images], labels[:args.num_images]
    simulate(model, images[:args.batch_size], labels[:args.batch_size], args.time_steps,
             args.batch_size, progress=False, compare_with_ann=False)
    for repeat in range(args.repeats):
        start = time.perf_counter()
        simulate(model, images, labels, args.time_steps, args.batch_size, progress=False,
                 compare_with_ann=False)
        seconds = time.perf_counter() - start
        print(f"run {repeat + 1}: {1000 * seconds / len(images):.3f} ms per image "
              f"({len(images)} images, {args.time_steps} steps, batch size {args.batch_size})")


if __name__ == "__main__":
    main()
