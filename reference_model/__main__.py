"""`python -m reference_model train|quantize|eval|tokenize|bench ...` (same as `pgolf-audit reference ...`)."""

import sys

from reference_model.cli import main

sys.exit(main())
