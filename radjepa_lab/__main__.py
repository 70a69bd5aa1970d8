"""`python -m radjepa_lab` is the same as the `radjepa-lab` console script."""

from radjepa_lab.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
