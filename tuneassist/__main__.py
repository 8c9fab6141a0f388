"""`python -m tuneassist`: the same entry point as the `tuneassist` script (works without it on PATH)."""

from tuneassist.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
