"""``python -m finetune`` (and ``accelerate launch -m finetune train RECIPE``) runs the CLI."""

import sys

from finetune.cli import main

sys.exit(main())
