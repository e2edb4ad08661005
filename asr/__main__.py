"""`python -m asr ...` is the `asr` command (so `torchrun -m asr train ...` runs training under torchrun)."""
from .cli import main

if __name__ == "__main__":
    main()
