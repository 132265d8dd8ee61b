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
import time

from model_options import (MAX_TIME_STEPS, add_model_options, load_model_and_images, positive_int,
                           time_step_count)

from ann2snn.simulation import simulate


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_options(parser, 2000, "first test images, simulated in each run")
    parser.add_argument("--repeats", type=positive_int, default=2, help="timed runs (default: 2)")
    parser.add_argument("--time_steps", type=time_step_count, default=20,
                        help=f"time steps simulated per image, 1 to {MAX_TIME_STEPS} (default: 20)")
    parser.add_argument("--batch_size", type=positive_int, default=50,
                        help="images per batch (default: 50)")
    args = parser.parse_args()

    model, images, labels = load_model_and_images(args)
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
