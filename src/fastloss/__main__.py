"""``python -m fastloss``: the ``fastloss`` command (see :mod:`fastloss._cli`)."""

import sys

from fastloss._cli import main

if __name__ == "__main__":
    sys.exit(main())
