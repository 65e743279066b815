"""`python -m livecore …` is the `livecore` command."""

from livecore.cli import main

if __name__ == "__main__":  # importing this module (e.g. walking the package) runs nothing
    main()
