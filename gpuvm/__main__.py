"""``python -m gpuvm``: the ``gpuvm`` command line."""

import sys

from gpuvm.study.cli import main

sys.exit(main())
