"""``python -m gsa`` (also what ``torchrun -m gsa`` runs): the gsa command line.

``python -m`` puts the current directory first on ``sys.path``; it is removed before the command
runs, so that no module lying in the directory where ``gsa`` is started (a plugin's name, ``h5py``,
...) is imported in place of the installed one.
"""

import os
import sys

from gsa.cli import main

if __name__ == "__main__":
    implicit = sys.path and not getattr(sys.flags, "safe_path", False)  # python -P adds no directory
    if implicit and os.path.abspath(sys.path[0] or os.curdir) == os.getcwd():
        del sys.path[0]
    raise SystemExit(main())
