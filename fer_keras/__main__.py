"""`python -m fer_keras COMMAND ...`: the `fer-keras` console script without installing it."""

import sys

from fer_keras.console import main

sys.exit(main())
