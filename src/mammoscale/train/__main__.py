"""``python -m mammoscale.train``: see :mod:`mammoscale.train.cli`."""

import sys

from mammoscale.train.cli import main

sys.exit(main())
