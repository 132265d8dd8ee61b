"""Plot the synaptic operations per image next to the ANN's operations for LeNet.

Reads the run folders k<k>/ next to this script, or those in --figs_dir. See ann2snn.plotting.
"""

import os
import sys

FIGS_DIR = os.path.dirname(os.path.abspath(__file__))

try:
    import ann2snn  # noqa: F401
except ModuleNotFoundError:
    # ann2snn is not installed, so it is imported from the repository root two folders up.
    sys.path.insert(0, os.path.dirname(os.path.dirname(FIGS_DIR)))

from ann2snn.plotting import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("sops", "LeNet", FIGS_DIR))
