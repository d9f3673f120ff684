"""`python -m t2icli` runs the `t2i` command line."""

from t2icli.cli import main

if __name__ == "__main__":
    main()
