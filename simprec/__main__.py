"""``python -m simprec``: the same as the ``simprec`` command."""

import sys

from .cli import main

sys.exit(main())
