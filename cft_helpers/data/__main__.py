"""``python -m cft_helpers.data validate FILE ...``: see cft_helpers.data.validate."""

import sys

from cft_helpers.data.validate import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0] != "validate":
        print("usage: python -m cft_helpers.data validate FILE [--schema alpaca|orca|messages|squad|xlsum] ...",
              file=sys.stderr)
        sys.exit(2)
    sys.exit(main(args[1:]))
