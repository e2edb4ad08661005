"""`python -m asr.cli ...` is the `asr` command too."""
from . import main

if __name__ == "__main__":
    main()
