"""`python -m seqlab.cli ARGS`: the `seqlab` command."""

import sys

from seqlab.cli.entry import main

sys.exit(main())
